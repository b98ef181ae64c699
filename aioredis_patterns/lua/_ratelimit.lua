-- Shared by the ratelimit_* scripts (paste after _prelude, before the algorithm's own
-- _rl_<algorithm>): the clock, the limits in ARGV, and the reply. Times are
-- milliseconds as Lua doubles. Each script pastes only its own algorithm's helpers:
-- Redis runs a script's whole body on every call, so every function defined is a
-- closure built per call.
--
-- Every script's ARGV starts with: ARGV[1] now in ms from the client's clock, or ''
-- to read Redis TIME; ARGV[2] cost (integer >= 1).

-- Nudges float comparisons so that a caller who waits exactly retry_after is admitted.
local RL_EPSILON = 1e-6

local function rl_now(whole_ms)
  local v = ARGV[1]
  local now
  if v == '' then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  else
    now = tonumber(v)
    if now == nil or now ~= now or now <= 0 or now >= 9007199254740992 then
      error(redis.error_reply('INVALID_ARGUMENT now must be milliseconds > 0, got '
        .. tostring(v)))
    end
  end
  if whole_ms then
    now = math.floor(now)
  end
  return now
end

-- The limits: ARGV[first..] in groups of `width` (limit, window ms[, burst]), at least
-- one group. The script takes one key per limit, or a single key when `one_key` (the log).
local function rl_limits(first, width, one_key)
  local n = (#ARGV - first + 1) / width
  if n < 1 or n ~= math.floor(n) then
    error(redis.error_reply('INVALID_ARGUMENT expected ' .. width .. ' arguments per limit'))
  end
  local wanted = one_key and 1 or n
  if #KEYS ~= wanted then
    error(redis.error_reply('INVALID_ARGUMENT expected ' .. wanted .. ' keys, got ' .. #KEYS))
  end
  local limits = {}
  for i = 1, n do
    local at = first + (i - 1) * width
    local lim = {limit = arg_int(at, 'limit', 1), window = arg_int(at + 1, 'window', 1)}
    if width > 2 then
      lim.burst = arg_int(at + 2, 'burst', 1)
    end
    limits[i] = lim
  end
  return limits
end

-- Milliseconds as whole microseconds, rounded up (but not for float noise), so that a
-- caller who waits exactly this long is never early.
local function rl_us(x)
  if x <= 0 then
    return 0
  end
  return math.ceil(x * 1000 - 1e-6)
end

-- states[i] = {remaining, retry ms, reset ms} of limit i. The limit reported is the one
-- a caller waits for (longest retry) when denied, else the one with the fewest
-- remaining (the longest reset on a tie).
-- Reply: {allowed 0/1, index of that limit, remaining, retry_after us, reset_after us,
-- now us}: integers, which Redis sends as they are (a Lua number with a fraction would
-- be truncated, and formatting it as text costs more than the rest of the reply).
local function rl_reply(allowed, states, now)
  local pick = 1
  for i = 2, #states do
    local s, b = states[i], states[pick]
    if allowed then
      if s[1] < b[1] or (s[1] == b[1] and s[3] > b[3]) then
        pick = i
      end
    elseif s[2] > b[2] then
      pick = i
    end
  end
  local b = states[pick]
  local retry = 0
  if not allowed then
    retry = b[2]
  end
  return {allowed and 1 or 0, pick, math.max(0, math.floor(b[1])), rl_us(retry), rl_us(b[3]),
    math.floor(now * 1000)}
end
