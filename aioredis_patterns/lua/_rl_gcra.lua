-- The gcra helpers (paste after _prelude and _ratelimit): its read-only math, shared by
-- ratelimit_gcra and ratelimit_gcra_peek so that both decide alike.

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
