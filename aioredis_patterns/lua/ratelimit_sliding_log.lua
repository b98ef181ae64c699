-- ratelimit_sliding_log
-- KEYS[1] the log: a sorted set, score = admit time in whole ms, member = a unique id
--   made by the client. The seed's layout: its rateLimitScript on the same key (same
--   window) shares the log.
-- ARGV[1] now ms ('' = Redis TIME), ARGV[2] cost (integer >= 1), ARGV[3] member id base
--   (members are <base>:1 .. <base>:<cost>), ARGV[4..] limit, window ms per limit
-- Trims entries older than the longest window, then admits only when every limit has
-- room for cost: adds cost entries at now and sets PEXPIRE to the longest window.
-- A denied call adds nothing.
-- returns {allowed 0/1, reported limit index, remaining, retry_after us, reset_after us,
--   now us}
-- errors: INVALID_ARGUMENT <detail>
-- #include _prelude
-- #include _ratelimit
-- #include _rl_sliding_log
local cost = arg_int(2, 'cost', 1)
local base = ARGV[3]
if base == nil or base == '' then
  return redis.error_reply('INVALID_ARGUMENT member id base must not be empty')
end
local limits = rl_limits(4, 2, true)
local now = rl_now(true)
local key = KEYS[1]

local longest = 0
for _, lim in ipairs(limits) do
  longest = math.max(longest, lim.window)
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - longest)

local counts, allowed = {}, true
for i, lim in ipairs(limits) do
  counts[i] = log_count(key, now, lim)
  if counts[i] + cost > lim.limit then
    allowed = false
  end
end

if allowed then
  -- ZADD in chunks: unpack() of a very large table overflows Lua's C stack
  local args = {}
  for j = 1, cost do
    args[#args + 1] = now
    args[#args + 1] = base .. ':' .. j
    if #args == 1000 or j == cost then
      redis.call('ZADD', key, unpack(args))
      args = {}
    end
  end
  redis.call('PEXPIRE', key, longest)
end

local states = {}
for i, lim in ipairs(limits) do
  states[i] = log_state(key, now, lim, cost, counts[i], allowed)
end
return rl_reply(allowed, states, now)
