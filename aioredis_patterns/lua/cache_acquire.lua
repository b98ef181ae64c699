-- cache_acquire
-- KEYS[1] value key, KEYS[2] metadata key, KEYS[3] lease key ({value key}:lease)
-- ARGV[1] lease token (random, never '!'), ARGV[2] lease ttl ms (integer >= 1),
-- ARGV[3] '1' to take the lease even when a value is stored (early refresh, corrupt value),
--         '0' to return a stored value instead
-- returns {'hit', value, value PTTL ms, load time ms or nil} a value is stored (ARGV[3] '0'),
--         {'acquired'} the lease was free (absent or '!') and now holds ARGV[1] for ARGV[2] ms,
--         {'held', lease PTTL ms} another caller holds the lease
-- errors: INVALID_ARGUMENT <detail>
-- The lease value '!' means set()/delete() ran while a load was in flight: that load may
-- not write any more, but a new caller may take the lease at once.
-- #include _prelude
local lease_ms = arg_int(2, 'lease ttl', 1)
if ARGV[3] ~= '1' then
  local value = redis.call('GET', KEYS[1])
  if value then
    return {'hit', value, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2])}
  end
end
local holder = redis.call('GET', KEYS[3])
if holder == false or holder == '!' then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', lease_ms)
  return {'acquired'}
end
return {'held', redis.call('PTTL', KEYS[3])}
