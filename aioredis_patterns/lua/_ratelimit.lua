-- Shared by the ratelimit_* scripts (paste after _prelude): the clock, the limits in
-- ARGV, the read-only math of each algorithm (so a _peek script and its writing twin
-- decide alike), and the reply. Times are milliseconds as Lua doubles.
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

-- Rounded up to the microsecond (but not for float noise), so that a caller who waits
-- exactly this long is never early.
local function rl_ms(x)
  if x <= 0 then
    return '0.000'
  end
  return string.format('%.3f', math.ceil(x * 1000 - 1e-6) / 1000)
end

-- states[i] = {remaining, retry ms, reset ms} of limit i. The limit reported is the one
-- a caller waits for (longest retry) when denied, else the one with the fewest
-- remaining (the longest reset on a tie).
-- Reply: {allowed 0/1, index of that limit, remaining, retry_after ms, reset_after ms,
-- now ms}, the last three as strings because Lua truncates numbers it returns.
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
  return {allowed and 1 or 0, pick, math.max(0, math.floor(b[1])), rl_ms(retry), rl_ms(b[3]),
    string.format('%.3f', now)}
end

-- sliding_log: one sorted set for every limit; limit i counts the entries of
-- (now - window, +inf], so entries stamped ahead of now (a client clock) count too.
local function log_count(key, now, lim)
  return redis.call('ZCOUNT', key, '(' .. (now - lim.window), '+inf')
end

-- `count` entries were in the window before this call; `taken` says whether cost
-- entries were just added.
local function log_state(key, now, lim, cost, count, taken)
  local low = now - lim.window
  local retry = 0
  if count + cost > lim.limit then
    -- the call fits once the (count + cost - limit)-th oldest entry has left the window
    local skip = count + cost - lim.limit - 1
    local e = redis.call('ZRANGEBYSCORE', key, '(' .. low, '+inf', 'WITHSCORES', 'LIMIT', skip, 1)
    retry = tonumber(e[2]) + lim.window - now
  end
  local reset = 0
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if newest[2] and tonumber(newest[2]) > low then
    reset = tonumber(newest[2]) + lim.window - now
  end
  return {lim.limit - count - (taken and cost or 0), retry, reset}
end

-- sliding_window: a hash {w = window index, c = count in it, p = count in the one
-- before}. Windows are aligned to multiples of the window length; the estimate weighs
-- the previous window by how much of it still overlaps (now - window, now].
local function sw_read(key, now, lim)
  local h = redis.call('HMGET', key, 'w', 'c', 'p')
  local index = math.floor(now / lim.window)
  local s = {index = index, cur = 0, prev = 0}
  if h[1] then
    local stored, c, p = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
    if stored == nil or c == nil or p == nil then
      error(redis.error_reply('BAD_STATE ' .. key .. ' is not a sliding_window hash'))
    end
    if stored >= index then
      -- the current window (or, from a clock ahead of this one, a later one: counted
      -- as current, which errs on the side of denying)
      s.index, s.cur, s.prev = stored, c, p
    elseif stored == index - 1 then
      s.prev = c
    end
  end
  s.elapsed = now - index * lim.window
  s.est = s.prev * (lim.window - s.elapsed) / lim.window + s.cur
  return s
end

local function sw_fits(s, lim, cost)
  return s.est + cost <= lim.limit + RL_EPSILON
end

local function sw_state(s, lim, cost, taken)
  local w = lim.window
  local retry = 0
  if not sw_fits(s, lim, cost) then
    local room = lim.limit - cost - s.cur
    if room >= 0 and s.prev > 0 then
      -- later in this window, once the previous window's weight has shrunk enough
      retry = w * (1 - room / s.prev) - s.elapsed
    else
      -- next window, where this window's count becomes the decaying previous one
      local later = 0
      if s.cur > lim.limit - cost then
        later = w * (1 - (lim.limit - cost) / s.cur)
      end
      retry = w - s.elapsed + later
    end
  end
  local used = s.est + (taken and cost or 0)
  local reset = 0
  if s.cur > 0 or taken then
    reset = 2 * w - s.elapsed
  elseif s.prev > 0 then
    reset = w - s.elapsed
  end
  return {math.floor(lim.limit - used + RL_EPSILON), retry, reset}
end

-- gcra: the key holds the theoretical arrival time (TAT) in ms. Each admitted unit
-- pushes it one emission interval (window / limit) further; a call is admitted while
-- the new TAT stays within burst intervals of now.
local function gcra_read(key, now, lim)
  local interval = lim.window / lim.limit
  local s = {tat = now, interval = interval, dvt = lim.burst * interval}
  local v = redis.call('GET', key)
  if v then
    local tat = tonumber(v)
    if tat == nil or tat ~= tat then
      error(redis.error_reply('BAD_STATE ' .. key .. ' does not hold a GCRA time'))
    end
    if tat > now then
      s.tat = tat
    end
  end
  return s
end

local function gcra_new_tat(s, cost)
  return s.tat + cost * s.interval
end

local function gcra_fits(s, now, cost)
  return gcra_new_tat(s, cost) - s.dvt <= now + RL_EPSILON
end

local function gcra_state(s, now, cost, taken)
  local tat = s.tat
  if taken then
    tat = gcra_new_tat(s, cost)
  end
  local retry = 0
  if not gcra_fits(s, now, cost) then
    retry = gcra_new_tat(s, cost) - s.dvt - now
  end
  return {math.floor((now + s.dvt - tat) / s.interval + RL_EPSILON), retry, tat - now}
end

-- fixed_window: a counter whose TTL is the rest of its window. A key found without a
-- TTL has lost it (PERSIST, a restore); the writing script gives it one again.
local function fw_read(key)
  local count, existed = stored_int(key)
  return {count = count, existed = existed, ttl = redis.call('PTTL', key)}
end

local function fw_state(s, lim, cost, taken)
  local ttl = s.ttl
  if ttl < 0 then
    ttl = (s.existed or taken) and lim.window or 0
  end
  local retry = 0
  if s.count + cost > lim.limit then
    -- Redis keeps a key through the millisecond its TTL ends in
    retry = ttl + 1
  end
  return {lim.limit - s.count - (taken and cost or 0), retry, ttl}
end
