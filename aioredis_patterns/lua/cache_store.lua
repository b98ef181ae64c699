-- cache_store
-- KEYS[1] value key, KEYS[2] metadata key, KEYS[3] lease key
-- ARGV[1] encoded value, ARGV[2] ttl ms (integer >= 0; 0: no expiry),
-- ARGV[3] load time ms for XFetch ('': write no metadata), ARGV[4] lease token
-- returns 1 stored and the lease key deleted, 0 dropped: the lease key no longer holds the
--         lease cache_acquire wrote for ARGV[4], so this load must not write
-- errors: INVALID_ARGUMENT <detail>
-- set(), delete() and a caller taking over an expired lease all overwrite a lease key that
-- exists, and the key outlives the lease (cache_acquire ARGV[4]). So a store that finds its
-- own lease knows that nothing touched the key since its load began: a load slower than
-- the lease still fills the cache when nobody else loaded or wrote meanwhile. Once the
-- key itself is gone (expired, evicted, deleted), that cannot be known, and nothing is
-- written.
-- #include _prelude
local ttl = arg_int(2, 'ttl', 0)
local holder = redis.call('GET', KEYS[3])
local mine = ARGV[4] .. ':'
if not holder or string.sub(holder, 1, #mine) ~= mine then
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
redis.call('DEL', KEYS[3])
return 1
