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

-- The string v as an integer, or nil for anything but a plain decimal integer that a
-- Lua double holds exactly (below 2^53 in size).
local function as_int(v)
  local digits = string.match(v, '^%-?(%d+)$')
  if digits == nil or #digits > 16 or tonumber(digits) >= 9007199254740992 then
    return nil
  end
  return tonumber(v)
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
