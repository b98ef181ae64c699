-- ratelimit_fixed_window
-- KEYS[i] one counter per limit; its TTL is what is left of its window
-- ARGV[1] now ms ('' = Redis TIME; only reported: the window lives in the key's TTL),
-- ARGV[2] cost (integer >= 1), ARGV[3..] limit, window ms per limit (same order as KEYS)
-- A counter found without a TTL gets PEXPIRE window again. Admits only when, for
-- every limit, count + cost <= limit; then INCRBY cost, and a counter this call created
-- gets PEXPIRE window: the window opens at the key's first admitted request.
-- returns {allowed 0/1, reported limit index, remaining, retry_after us, reset_after us,
--   now us}
-- errors: INVALID_ARGUMENT <detail>; NOT_INTEGER <key>
-- #include _prelude
-- #include _ratelimit
-- #include _rl_fixed_window
local cost = arg_int(2, 'cost', 1)
local limits = rl_limits(3, 2, false)
local now = rl_now(false)

local reads, allowed = {}, true
for i, lim in ipairs(limits) do
  reads[i] = fw_read(KEYS[i])
  if reads[i].count + cost > lim.limit then
    allowed = false
  end
end

for i, lim in ipairs(limits) do
  local s = reads[i]
  if s.existed and s.ttl == -1 then
    redis.call('PEXPIRE', KEYS[i], lim.window)
    s.ttl = lim.window
  end
  if allowed then
    redis.call('INCRBY', KEYS[i], cost)
    if not s.existed then
      redis.call('PEXPIRE', KEYS[i], lim.window)
      s.ttl = lim.window
    end
  end
end

local states = {}
for i, lim in ipairs(limits) do
  states[i] = fw_state(reads[i], lim, cost, allowed)
end
return rl_reply(allowed, states, now)
