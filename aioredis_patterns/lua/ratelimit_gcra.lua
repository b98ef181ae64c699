-- ratelimit_gcra
-- KEYS[i] one string per limit: the theoretical arrival time (TAT), Unix ms, as decimal text
-- (whole ms, '.', up to 12 digits of fraction; see _rl_gcra)
-- ARGV[1] now ms ('' = Redis TIME), ARGV[2] cost (integer >= 1),
-- ARGV[3..] limit, window ms, burst per limit (same order as KEYS)
-- With interval = window / limit: admits only when, for every limit,
-- max(TAT, now) + cost * interval - burst * interval <= now; then stores that new TAT
-- with PX = the time until the bucket is full again (>= 1 ms).
-- A denied call writes nothing.
-- returns {allowed 0/1, reported limit index, remaining, retry_after us, reset_after us,
--   now us}
-- errors: INVALID_ARGUMENT <detail>; BAD_STATE <key> (does not hold such a time)
-- #include _prelude
-- #include _ratelimit
-- #include _rl_gcra
local cost = arg_int(2, 'cost', 1)
local limits = rl_limits(3, 3, false)
local now_w, now_f, now = gcra_now()

local reads, allowed = {}, true
for i, lim in ipairs(limits) do
  reads[i] = gcra_read(KEYS[i], now_w, now_f, lim)
  if not gcra_fits(reads[i], cost) then
    allowed = false
  end
end

if allowed then
  for i = 1, #limits do
    local ahead = gcra_next(reads[i], cost)
    redis.call('SET', KEYS[i], gcra_text(now_w, now_f, ahead), 'PX',
      math.max(1, math.ceil(ahead)))
  end
end

local states = {}
for i = 1, #limits do
  states[i] = gcra_state(reads[i], cost, allowed)
end
return rl_reply(allowed, states, now)
