#!lua flags=no-writes
-- ratelimit_fixed_window_peek
-- KEYS[i] one counter per limit (see ratelimit_fixed_window)
-- ARGV[1] now ms ('' = Redis TIME; only reported), ARGV[2] cost (integer >= 1),
-- ARGV[3..] limit, window ms per limit
-- Reports what ratelimit_fixed_window would decide for cost, changing nothing (a
-- counter without a TTL is reported with a full window, the TTL it will get).
-- returns {would be allowed 0/1, reported limit index, remaining, retry_after us,
--   reset_after us, now us}
-- errors: INVALID_ARGUMENT <detail>; NOT_INTEGER <key>
-- #include _prelude
-- #include _ratelimit
-- #include _rl_fixed_window
local cost = arg_int(2, 'cost', 1)
local limits = rl_limits(3, 2, false)
local now = rl_now(false)

local states, allowed = {}, true
for i, lim in ipairs(limits) do
  local s = fw_read(KEYS[i])
  if s.count + cost > lim.limit then
    allowed = false
  end
  states[i] = fw_state(s, lim, cost, false)
end
return rl_reply(allowed, states, now)
