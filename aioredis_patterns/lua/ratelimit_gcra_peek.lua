#!lua flags=no-writes
-- ratelimit_gcra_peek
-- KEYS[i] one TAT string per limit (see ratelimit_gcra)
-- ARGV[1] now ms ('' = Redis TIME), ARGV[2] cost (integer >= 1),
-- ARGV[3..] limit, window ms, burst per limit
-- Reports what ratelimit_gcra would decide for cost, changing nothing.
-- returns {would be allowed 0/1, reported limit index, remaining, retry_after us,
--   reset_after us, now us}
-- errors: INVALID_ARGUMENT <detail>; BAD_STATE <key>
-- #include _prelude
-- #include _ratelimit
-- #include _rl_gcra
local cost = arg_int(2, 'cost', 1)
local limits = rl_limits(3, 3, false)
local now_w, now_f, now = gcra_now()

local states, allowed = {}, true
for i, lim in ipairs(limits) do
  local s = gcra_read(KEYS[i], now_w, now_f, lim)
  if not gcra_fits(s, cost) then
    allowed = false
  end
  states[i] = gcra_state(s, cost, false)
end
return rl_reply(allowed, states, now)
