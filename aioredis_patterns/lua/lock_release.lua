-- lock_release
-- KEYS[1] lock key, KEYS[2] waiter flag, KEYS[3] wake-up signal list
-- ARGV[1] token, ARGV[2] signal list ttl ms (integer >= 1)
-- returns 1 released (this owner still held the lock), 0 not held by this owner (expired,
-- deleted or taken by another; nothing is changed)
-- errors: INVALID_ARGUMENT <detail>
-- When a failed acquire left the waiter flag, one element is pushed to the signal list:
-- a waiter blocked in BLPOP on it wakes at once instead of waiting for its next poll.
-- With nobody waiting the release is one GET, one DEL and one EXISTS.
-- #include _prelude
local signal_ttl = arg_int(2, 'signal ttl', 1)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
-- The flag is left to expire, not deleted: other waiters may still be blocked in BLPOP,
-- and the next release must wake the next of them.
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('LPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, 0)
  redis.call('PEXPIRE', KEYS[3], signal_ttl)
end
return 1
