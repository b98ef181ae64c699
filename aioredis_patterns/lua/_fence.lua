-- Fencing tokens, pasted by ScriptBook where a script has the line "-- #include _fence"
-- (after "-- #include _prelude": it uses stored_int).

-- The next fencing token of the counter at key: one more than the last token, and never
-- less than the server's clock in microseconds. Counting from the clock keeps tokens
-- rising when the counter is lost (evicted, a restart without persistence, a failover
-- that dropped the latest increments): the next token is still above every earlier one,
-- since those were drawn at earlier microseconds and one key is not acquired more than
-- once a microsecond. That holds while the server's clock does not go back. Tokens stay
-- below 2^53, exact in a Lua double, until the year 2255.
-- It writes nothing (store it with store_fence) and raises NOT_INTEGER <key> when the
-- counter holds anything else.
local function next_fence(key)
  local last = stored_int(key)
  local time = redis.call('TIME')
  return math.max(last + 1, tonumber(time[1]) * 1000000 + tonumber(time[2]))
end

local function store_fence(key, fence)
  redis.call('SET', key, string.format('%.0f', fence))
end
