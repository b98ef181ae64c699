#!lua flags=no-writes
-- cache_read
-- KEYS[1] value key, KEYS[2] metadata key ({value key}:meta)
-- returns {value, value PTTL ms (-1: no expiry), load time ms or nil} when a value is stored,
--         {nil} on a miss
-- errors: none of its own (a value key of another type fails with WRONGTYPE)
-- Read-only, so one EVALSHA_RO round trip serves a hit together with what XFetch needs.
local value = redis.call('GET', KEYS[1])
if value == false then
  return {false}
end
return {value, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2])}
