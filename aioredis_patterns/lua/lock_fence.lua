-- lock_fence
-- KEYS[1] lock key, KEYS[2] fencing counter
-- ARGV[1] token, ARGV[2] fencing token (integer >= 1)
-- returns 1 the counter is now at least ARGV[2], 0 this owner no longer holds the lock
-- (nothing is changed)
-- errors: INVALID_ARGUMENT <detail>; NOT_INTEGER <fencing counter>
-- Redlock's second phase: the counter is raised only while this owner holds the key on
-- this node, so every later holder of this node's key draws a larger number.
-- #include _prelude
local fence = arg_int(2, 'fencing token', 1)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if stored_int(KEYS[2]) < fence then
  redis.call('SET', KEYS[2], fence)
end
return 1
