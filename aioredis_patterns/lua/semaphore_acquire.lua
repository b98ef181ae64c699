-- semaphore_acquire
-- KEYS[1] holders (sorted set: member token, score expiry ms by server TIME), KEYS[2] fencing
-- counter, KEYS[3] waiter flag
-- ARGV[1] token (non-empty), ARGV[2] ttl ms (integer >= 1), ARGV[3] limit (integer >= 1),
-- ARGV[4] waiter flag ttl ms (integer >= 1)
-- returns {1, fencing token} admitted (tokens rise strictly and are at least the server's
-- clock in microseconds, see _fence); {0, ms until the earliest holder expires} all slots
-- taken, and the waiter flag is set for ARGV[4] ms so that a release wakes this waiter
-- errors: INVALID_ARGUMENT <detail>; NOT_INTEGER <fencing counter>
-- Expired holders are pruned first, so a crashed holder frees its slot at its expiry.
-- #include _prelude
-- #include _fence
local ttl = arg_int(2, 'ttl', 1)
local limit = arg_int(3, 'limit', 1)
local flag_ttl = arg_int(4, 'waiter flag ttl', 1)
if ARGV[1] == '' then
  return redis.error_reply('INVALID_ARGUMENT token must not be empty')
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  redis.call('SET', KEYS[3], '1', 'PX', flag_ttl)
  return {0, tonumber(first[2]) - now}
end
-- the token is drawn before the holder is added, so a corrupt counter admits nobody
local fence = draw_fence(KEYS[2])
if fence == nil then
  return redis.error_reply('NOT_INTEGER ' .. KEYS[2])
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
-- the set lives as long as its longest-lived holder, so an idle semaphore leaves nothing
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {1, fence}
