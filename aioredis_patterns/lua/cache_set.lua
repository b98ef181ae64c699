-- cache_set
-- KEYS[1] value key, KEYS[2] lease key ({value key}:lease)
-- ARGV[1] encoded value, ARGV[2] ttl ms (integer >= 0; 0: no expiry)
-- returns 1
-- errors: INVALID_ARGUMENT <detail>
-- A lease key that exists is overwritten with '!' (keeping its TTL) before the write, so
-- a load that began earlier cannot overwrite this newer value (see cache_store).
-- #include _prelude
local ttl = arg_int(2, 'ttl', 0)
redis.call('SET', KEYS[2], '!', 'XX', 'KEEPTTL')
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
