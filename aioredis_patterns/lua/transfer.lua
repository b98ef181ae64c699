-- transfer
-- KEYS[1] source balance, KEYS[2] destination balance, KEYS[3] idempotency record (optional)
-- ARGV[1] amount (integer >= 1), ARGV[2] idempotency record ttl ms (when KEYS[3] is given)
-- returns {source balance after, destination balance after}; with a record that
-- already exists, the first call's result
-- errors: INVALID_ARGUMENT <detail>; NOT_INTEGER <key>; INSUFFICIENT_BALANCE <balance> <requested>;
-- LIMIT_EXCEEDED <destination balance> 9007199254740991 when the destination would pass
-- 2^53 - 1, the largest balance the scripts hold exactly (nothing is written)
-- #include _prelude
local amount = arg_int(1, 'amount', 1)
if KEYS[1] == KEYS[2] then
  return redis.error_reply('INVALID_ARGUMENT source and destination are the same key')
end
local record = KEYS[3]
local record_ttl = record and arg_int(2, 'idempotency ttl', 1)
if record then
  local seen = redis.call('GET', record)
  if seen then
    local a, from, to = string.match(seen, '^(%d+):(%-?%d+):(%-?%d+)$')
    if a ~= ARGV[1] then
      return redis.error_reply('INVALID_ARGUMENT idempotency key reused with another amount')
    end
    return {tonumber(from), tonumber(to)}
  end
end
local balance = stored_int(KEYS[1])
local destination = stored_int(KEYS[2]) -- refuse a corrupt destination before the first write
if balance < amount then
  return redis.error_reply('INSUFFICIENT_BALANCE ' .. int_str(balance) .. ' ' .. int_str(amount))
end
if destination + amount > 9007199254740991 then
  return redis.error_reply('LIMIT_EXCEEDED ' .. int_str(destination) .. ' 9007199254740991')
end
local from = redis.call('DECRBY', KEYS[1], amount)
local to = redis.call('INCRBY', KEYS[2], amount)
if record then
  redis.call('SET', record, ARGV[1] .. ':' .. int_str(from) .. ':' .. int_str(to), 'PX', record_ttl)
end
return {from, to}
