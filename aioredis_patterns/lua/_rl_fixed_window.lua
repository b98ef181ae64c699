-- The fixed_window helpers (paste after _prelude and _ratelimit): its read-only math, shared by
-- ratelimit_fixed_window and ratelimit_fixed_window_peek so that both decide alike.

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
