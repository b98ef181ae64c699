-- The sliding_log helpers (paste after _prelude and _ratelimit): its read-only math, shared by
-- ratelimit_sliding_log and ratelimit_sliding_log_peek so that both decide alike.

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
