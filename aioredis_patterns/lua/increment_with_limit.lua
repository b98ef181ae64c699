-- increment_with_limit
-- KEYS[1] counter
-- ARGV[1] amount (integer >= 1), ARGV[2] limit (integer >= 1),
-- ARGV[3] ttl ms set when this call creates the key (0: none)
-- returns the new value
-- errors: INVALID_ARGUMENT <detail>; NOT_INTEGER <key>; LIMIT_EXCEEDED <current> <limit>
-- #include _prelude
local amount = arg_int(1, 'amount', 1)
local limit = arg_int(2, 'limit', 1)
local ttl = arg_int(3, 'ttl', 0)
local current, existed = stored_int(KEYS[1])
if current + amount > limit then
  return redis.error_reply('LIMIT_EXCEEDED ' .. int_str(current) .. ' ' .. int_str(limit))
end
local new = redis.call('INCRBY', KEYS[1], amount)
if ttl > 0 and not existed then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return new
