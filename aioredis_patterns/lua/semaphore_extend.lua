-- semaphore_extend
-- KEYS[1] holders (sorted set)
-- ARGV[1] token, ARGV[2] new ttl ms (integer >= 1)
-- returns 1 extended, 0 this holder has no live slot (an expired entry is removed, a missing
-- one is never re-created)
-- errors: INVALID_ARGUMENT <detail>
-- #include _prelude
local ttl = arg_int(2, 'ttl', 1)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
