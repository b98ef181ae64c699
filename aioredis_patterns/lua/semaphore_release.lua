-- semaphore_release
-- KEYS[1] holders (sorted set), KEYS[2] waiter flag, KEYS[3] wake-up signal list
-- ARGV[1] token, ARGV[2] signal list ttl ms (integer >= 1), ARGV[3] limit (integer >= 1)
-- returns 1 released (this holder still held a live slot), 0 it did not (expired or removed;
-- an expired entry is removed)
-- errors: INVALID_ARGUMENT <detail>
-- While a refused acquire's waiter flag exists, a release pushes one element to the signal
-- list (at most limit are kept): one waiter blocked in BLPOP on it wakes at once. The flag
-- is left to expire: other waiters may still be blocked.
-- #include _prelude
local signal_ttl = arg_int(2, 'signal ttl', 1)
local limit = arg_int(3, 'limit', 1)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if tonumber(score) <= now then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('LPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, limit - 1)
  redis.call('PEXPIRE', KEYS[3], signal_ttl)
end
return 1
