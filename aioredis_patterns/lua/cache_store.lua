-- cache_store
-- KEYS[1] value key, KEYS[2] metadata key, KEYS[3] lease key
-- ARGV[1] encoded value, ARGV[2] ttl ms (integer >= 0; 0: no expiry),
-- ARGV[3] load time ms for XFetch ('': write no metadata), ARGV[4] lease token
-- returns 1 stored (and this caller's lease released), 0 dropped: the lease is held by
--         another caller or was invalidated ('!') by set()/delete(), so a newer value exists
--         or is on its way and this load must not overwrite it
-- errors: INVALID_ARGUMENT <detail>
-- A lease that expired and was not retaken does not block the write: a load slower than
-- the lease still fills the cache when nobody else is loading.
-- #include _prelude
local ttl = arg_int(2, 'ttl', 0)
local holder = redis.call('GET', KEYS[3])
if holder ~= false and holder ~= ARGV[4] then
  return 0
end
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
if ARGV[3] ~= '' and ttl > 0 then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl)
else
  redis.call('DEL', KEYS[2])
end
if holder then
  redis.call('DEL', KEYS[3])
end
return 1
