-- lock_acquire
-- KEYS[1] lock key, KEYS[2] fencing counter, KEYS[3] waiter flag
-- ARGV[1] token (non-empty), ARGV[2] ttl ms (integer >= 1), ARGV[3] waiter flag ttl ms
-- (integer >= 1), ARGV[4] optional: '0' draws no fencing token (KEYS[2] is left alone)
-- returns {1, fencing token} acquired ({1, 0} with ARGV[4] '0'; tokens rise strictly and are
-- at least the server's clock in microseconds, see _fence); {0, PTTL of the holder's
-- key (-1: no expiry)} held by another, and the waiter flag is set for ARGV[3] ms so the
-- release wakes this waiter
-- errors: INVALID_ARGUMENT <detail>; NOT_INTEGER <fencing counter> (nothing is left behind)
-- The key is the seed's layout (SET key token NX PX ttl), so the seed's Go lock and this
-- script exclude each other on the same key.
-- #include _prelude
-- #include _fence
local ttl = arg_int(2, 'ttl', 1)
local flag_ttl = arg_int(3, 'waiter flag ttl', 1)
if ARGV[4] ~= nil and ARGV[4] ~= '0' and ARGV[4] ~= '1' then
  return redis.error_reply('INVALID_ARGUMENT fencing flag must be 0 or 1, got ' .. ARGV[4])
end
if ARGV[1] == '' then
  return redis.error_reply('INVALID_ARGUMENT token must not be empty')
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ttl) then
  redis.call('SET', KEYS[3], '1', 'PX', flag_ttl)
  return {0, redis.call('PTTL', KEYS[1])}
end
if ARGV[4] == '0' then
  return {1, 0}
end
local fence = draw_fence(KEYS[2])
if fence == nil then
  -- undo the SET so a corrupt counter never leaves an orphaned lock behind
  redis.call('DEL', KEYS[1])
  return redis.error_reply('NOT_INTEGER ' .. KEYS[2])
end
return {1, fence}
