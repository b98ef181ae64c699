#!lua flags=no-writes
-- ratelimit_sliding_window_peek
-- KEYS[i] one hash per limit (see ratelimit_sliding_window)
-- ARGV[1] now ms ('' = Redis TIME), ARGV[2] cost (integer >= 1),
-- ARGV[3..] limit, window ms per limit
-- Reports what ratelimit_sliding_window would decide for cost, changing nothing.
-- returns {would be allowed 0/1, reported limit index, remaining, retry_after us,
--   reset_after us, now us}
-- errors: INVALID_ARGUMENT <detail>; BAD_STATE <key>
-- #include _prelude
-- #include _ratelimit
-- #include _rl_sliding_window
local cost = arg_int(2, 'cost', 1)
local limits = rl_limits(3, 2, false)
local now = rl_now(false)

local states, allowed = {}, true
for i, lim in ipairs(limits) do
  local s = sw_read(KEYS[i], now, lim)
  if not sw_fits(s, lim, cost) then
    allowed = false
  end
  states[i] = sw_state(s, lim, cost, false)
end
return rl_reply(allowed, states, now)
