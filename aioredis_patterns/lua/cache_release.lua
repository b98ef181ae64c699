-- cache_release
-- KEYS[1] lease key | ARGV[1] lease token
-- returns 1 released, 0 the lease is no longer this caller's (expired, retaken or invalidated)
-- errors: none of its own
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
