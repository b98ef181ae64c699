-- Fencing tokens, pasted by ScriptBook where a script has the line "-- #include _fence"
-- (after "-- #include _prelude": it uses as_int).

-- Draw the next fencing token into the counter at key and return it; nil, with the key
-- left as it was, when the key holds anything but an integer.
-- A token is one more than the last one, and never less than the server's clock in
-- microseconds. Counting from the clock keeps tokens rising when the counter is lost
-- (evicted, a restart without persistence, a failover that dropped the latest draws):
-- the next token is still above every earlier one, since those were drawn at earlier
-- microseconds and one key is not acquired more than once a microsecond. That holds
-- while the server's clock does not go back. Tokens stay below 2^53, exact in a Lua
-- double, until the year 2255.
-- One write when the clock is ahead of the counter, as it is unless draws come faster
-- than one a microsecond: SET ... GET stores the clock and returns the last token.
local function draw_fence(key)
  local time = redis.call('TIME')
  local fence = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local last = redis.pcall('SET', key, fence, 'GET')
  if type(last) == 'table' then
    return nil -- WRONGTYPE: nothing was written
  end
  if last then
    local n = as_int(last)
    if n == nil then
      redis.call('SET', key, last)
      return nil
    end
    if n >= fence then
      fence = n + 1
      redis.call('SET', key, fence)
    end
  end
  return fence
end
