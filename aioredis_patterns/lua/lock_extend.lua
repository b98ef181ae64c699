-- lock_extend
-- KEYS[1] lock key
-- ARGV[1] token, ARGV[2] new ttl ms (integer >= 1)
-- returns 1 extended, 0 not held by this owner (a key that is gone is never re-created)
-- errors: INVALID_ARGUMENT <detail>
-- #include _prelude
local ttl = arg_int(2, 'ttl', 1)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
