#!lua flags=no-writes
-- ratelimit_sliding_log_peek
-- KEYS[1] the log (see ratelimit_sliding_log)
-- ARGV[1] now ms ('' = Redis TIME), ARGV[2] cost (integer >= 1),
-- ARGV[3..] limit, window ms per limit
-- Reports what ratelimit_sliding_log would decide for cost, changing nothing.
-- returns {would be allowed 0/1, reported limit index, remaining, retry_after us,
--   reset_after us, now us}
-- errors: INVALID_ARGUMENT <detail>
-- #include _prelude
-- #include _ratelimit
-- #include _rl_sliding_log
local cost = arg_int(2, 'cost', 1)
local limits = rl_limits(3, 2, true)
local now = rl_now(true)
local key = KEYS[1]

local states, allowed = {}, true
for i, lim in ipairs(limits) do
  local count = log_count(key, now, lim)
  if count + cost > lim.limit then
    allowed = false
  end
  states[i] = log_state(key, now, lim, cost, count, false)
end
return rl_reply(allowed, states, now)
