-- The sliding_window helpers (paste after _prelude and _ratelimit): its read-only math, shared by
-- ratelimit_sliding_window and ratelimit_sliding_window_peek so that both decide alike.

-- sliding_window: a hash {w = window index, c = count in it, p = count in the one
-- before}. Windows are aligned to multiples of the window length; the estimate weighs
-- the previous window by how much of it still overlaps (now - window, now].
local function sw_read(key, now, lim)
  local h = redis.call('HMGET', key, 'w', 'c', 'p')
  local index = math.floor(now / lim.window)
  local s = {index = index, cur = 0, prev = 0}
  if h[1] then
    local stored, c, p = as_int(h[1]), h[2] and as_int(h[2]), h[3] and as_int(h[3])
    if not (stored and c and p) or stored < 0 or c < 0 or p < 0 then
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
