-- compare_and_swap
-- KEYS[1] key
-- ARGV[1] '1' when the key must hold ARGV[2], '0' when it must be absent
-- ARGV[2] expected value, ARGV[3] new value
-- returns 1 swapped (the key's TTL is kept), 0 the current value did not match
-- errors: none of its own
local current = redis.call('GET', KEYS[1])
local matches
if ARGV[1] == '1' then
  matches = current == ARGV[2]
else
  matches = current == false
end
if matches then
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
  return 1
end
return 0
