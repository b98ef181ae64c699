-- Shared helpers, pasted by ScriptBook where a script has the line "-- #include _prelude".
-- Errors are raised as redis.error_reply('CODE detail'); the book maps CODE to an exception.

-- ARGV[i] as an integer in [min, 2^53): refuses NaN, infinities, fractions and junk.
local function arg_int(i, name, min)
  local v = ARGV[i]
  local n = tonumber(v)
  if n == nil or n ~= n or n >= 9007199254740992 or n < min or n ~= math.floor(n) then
    error(redis.error_reply('INVALID_ARGUMENT ' .. name .. ' must be an integer >= ' .. min
      .. ', got ' .. tostring(v)))
  end
  return n
end

-- The string v as an integer, or nil unless INCRBY would read it as the same integer
-- and a Lua double holds it exactly: decimal digits with an optional '-', no '+', no
-- spaces, no leading zero and no '-0' (Redis refuses '007' and '-0'), below 2^53 in size.
local function as_int(v)
  if v == '0' then
    return 0
  end
  local digits = string.match(v, '^%-?([1-9]%d*)$')
  if digits == nil or #digits > 16 or tonumber(digits) >= 9007199254740992 then
    return nil
  end
  return tonumber(v)
end

-- The integer n as decimal text. Lua's own tostring and '..' keep 14 significant digits
-- and write 10^14 as '1e+14', which neither INCRBY nor the client reads as an integer.
local function int_str(n)
  return string.format('%d', n)
end

-- The integer stored at key and whether the key exists; a missing key is 0.
-- Anything else as_int refuses raises NOT_INTEGER <key>.
local function stored_int(key)
  local v = redis.call('GET', key)
  if v == false then
    return 0, false
  end
  local n = as_int(v)
  if n == nil then
    error(redis.error_reply('NOT_INTEGER ' .. key))
  end
  return n, true
end
