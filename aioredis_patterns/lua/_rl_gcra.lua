-- The gcra helpers (paste after _prelude and _ratelimit): its read-only math, shared by
-- ratelimit_gcra and ratelimit_gcra_peek so that both decide alike.

-- gcra: the key holds the theoretical arrival time (TAT): Unix ms as plain decimal text,
-- whole ms, then up to 12 digits of fraction. Each admitted unit pushes it one emission
-- interval (window / limit) further; a call is admitted while the new TAT stays within
-- burst intervals of now.
-- A Unix time in ms as one double is only good to about 2^-12 ms (it is near 2^41), so
-- an interval of a few microseconds or less would be rounded at every write and the bucket would
-- admit more than its burst. So times are kept as whole ms plus a fraction, and the
-- math works on how far the TAT is ahead of now, a small number that a double holds to
-- far below a nanosecond.

-- now as {whole ms, fraction of a ms}, and as one double for the reply.
local function gcra_now()
  local v = ARGV[1]
  if v == '' then
    local t = redis.call('TIME')
    local us = tonumber(t[2])
    local whole = tonumber(t[1]) * 1000 + math.floor(us / 1000)
    local frac = (us % 1000) / 1000
    return whole, frac, whole + frac
  end
  local now = rl_now(false) -- checks the client's time
  local w, f = string.match(v, '^(%d+)%.(%d+)$')
  if w and #w <= 16 then
    return tonumber(w), tonumber('0.' .. f), now
  end
  local whole = math.floor(now)
  return whole, now - whole, now
end

-- {ahead = ms the TAT is ahead of now (0 when it is not), interval, dvt = burst * interval}
local function gcra_read(key, now_w, now_f, lim)
  local interval = lim.window / lim.limit
  local s = {ahead = 0, interval = interval, dvt = lim.burst * interval}
  local v = redis.call('GET', key)
  if v then
    local w, f = string.match(v, '^(%d+)%.?(%d*)$')
    if w == nil or #w > 16 or tonumber(w) >= 9007199254740992 then
      error(redis.error_reply('BAD_STATE ' .. key .. ' does not hold a GCRA time'))
    end
    local ahead = (tonumber(w) - now_w) + ((f == '' and 0 or tonumber('0.' .. f)) - now_f)
    if ahead > 0 then
      s.ahead = ahead
    end
  end
  return s
end

-- How far the TAT would be ahead of now once cost is admitted.
local function gcra_next(s, cost)
  return s.ahead + cost * s.interval
end

-- Below an interval, so the nudge never admits a unit more than the burst.
local function gcra_fits(s, cost)
  return gcra_next(s, cost) - s.dvt <= math.min(RL_EPSILON, s.interval / 1000)
end

-- The TAT now_w + now_f + ahead as the key's text.
local function gcra_text(now_w, now_f, ahead)
  local f = now_f + ahead
  local carry = math.floor(f)
  local units = math.floor((f - carry) * 1e12 + 0.5)
  if units >= 1e12 then
    carry, units = carry + 1, 0
  end
  local text = string.format('%d', now_w + carry)
  if units > 0 then
    text = text .. string.gsub(string.format('.%012d', units), '0+$', '')
  end
  return text
end

local function gcra_state(s, cost, taken)
  local ahead = s.ahead
  if taken then
    ahead = gcra_next(s, cost)
  end
  local retry = 0
  if not gcra_fits(s, cost) then
    retry = gcra_next(s, cost) - s.dvt
  end
  return {math.floor((s.dvt - ahead) / s.interval + RL_EPSILON), retry, ahead}
end
