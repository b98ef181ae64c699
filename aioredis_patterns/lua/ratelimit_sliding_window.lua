-- ratelimit_sliding_window
-- KEYS[i] one hash per limit: {w = window index, c = count in window w, p = count in w-1}
-- ARGV[1] now ms ('' = Redis TIME), ARGV[2] cost (integer >= 1),
-- ARGV[3..] limit, window ms per limit (same order as KEYS)
-- Admits only when, for every limit, previous count * (share of the previous window
-- still inside (now - window, now]) + current count + cost <= limit; then adds cost to
-- each current count and sets PEXPIRE to the end of the next window.
-- A denied call writes nothing.
-- returns {allowed 0/1, reported limit index, remaining, retry_after us, reset_after us,
--   now us}
-- errors: INVALID_ARGUMENT <detail>; BAD_STATE <key> (not a sliding_window hash)
-- #include _prelude
-- #include _ratelimit
-- #include _rl_sliding_window
local cost = arg_int(2, 'cost', 1)
local limits = rl_limits(3, 2, false)
local now = rl_now(false)

local reads, allowed = {}, true
for i, lim in ipairs(limits) do
  reads[i] = sw_read(KEYS[i], now, lim)
  if not sw_fits(reads[i], lim, cost) then
    allowed = false
  end
end

if allowed then
  for i, lim in ipairs(limits) do
    local s = reads[i]
    redis.call('HSET', KEYS[i], 'w', s.index, 'c', s.cur + cost, 'p', s.prev)
    redis.call('PEXPIRE', KEYS[i], math.max(1, math.ceil((s.index + 2) * lim.window - now)))
  end
end

local states = {}
for i, lim in ipairs(limits) do
  states[i] = sw_state(reads[i], lim, cost, allowed)
end
return rl_reply(allowed, states, now)
