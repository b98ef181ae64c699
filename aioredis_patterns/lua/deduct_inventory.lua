-- deduct_inventory
-- KEYS[1] stock counter, KEYS[2] idempotency record (optional)
-- ARGV[1] quantity (integer >= 1), ARGV[2] idempotency record ttl ms (when KEYS[2] is given)
-- returns the stock left; with a record that already exists, the first call's result
-- errors: INVALID_ARGUMENT <detail>; NOT_INTEGER <key>; INSUFFICIENT_STOCK <available> <requested>
-- #include _prelude
local quantity = arg_int(1, 'quantity', 1)
local record = KEYS[2]
local record_ttl = record and arg_int(2, 'idempotency ttl', 1)
if record then
  local seen = redis.call('GET', record)
  if seen then
    local q, result = string.match(seen, '^(%d+):(%-?%d+)$')
    if q ~= ARGV[1] then
      return redis.error_reply('INVALID_ARGUMENT idempotency key reused with another quantity')
    end
    return tonumber(result)
  end
end
local stock = stored_int(KEYS[1])
if stock < quantity then
  return redis.error_reply('INSUFFICIENT_STOCK ' .. int_str(stock) .. ' ' .. int_str(quantity))
end
local left = redis.call('DECRBY', KEYS[1], quantity)
if record then
  redis.call('SET', record, ARGV[1] .. ':' .. int_str(left), 'PX', record_ttl)
end
return left
