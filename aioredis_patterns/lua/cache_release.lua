-- cache_release
-- KEYS[1] lease key | ARGV[1] lease token
-- returns 1 released, 0 the lease key no longer holds this caller's lease (expired, taken
--         over or invalidated)
-- errors: none of its own
-- cache_acquire writes the lease as '<token>:<time>'.
local holder = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. ':'
if holder and string.sub(holder, 1, #mine) == mine then
  return redis.call('DEL', KEYS[1])
end
return 0
