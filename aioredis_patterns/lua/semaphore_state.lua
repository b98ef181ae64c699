#!lua flags=no-writes
-- semaphore_state
-- KEYS[1] holders (sorted set)
-- ARGV[1] token ('' for none)
-- returns {live holders, 1 when ARGV[1] is a live holder else 0}
-- errors: none of its own
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local live = redis.call('ZCOUNT', KEYS[1], string.format('(%d', now), '+inf')
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local owned = 0
if score and tonumber(score) > now then
  owned = 1
end
return {live, owned}
