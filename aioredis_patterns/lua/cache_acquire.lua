-- cache_acquire
-- KEYS[1] value key, KEYS[2] metadata key, KEYS[3] lease key ({value key}:lease)
-- ARGV[1] lease token (hex digits), ARGV[2] lease ttl ms (integer >= 1),
-- ARGV[3] '0' to return a stored value; '1' to take the lease even when a value is stored
--         (early refresh); or the SHA-1 (lowercase hex) of a stored value the caller found
--         corrupt: take the lease over that value, but return any other stored value,
-- ARGV[4] lifetime ms of the lease key (integer >= ARGV[2])
-- returns {'hit', value, value PTTL ms, load time ms or nil} a value is stored that ARGV[3]
--         does not skip,
--         {'acquired'} the lease was free and the lease key now holds
--         '<ARGV[1]>:<Redis TIME ms + ARGV[2]>' with PX ARGV[4],
--         {'held', ms until the holder's lease ends} another caller holds the lease
-- errors: INVALID_ARGUMENT <detail>
-- The lease is free when its key is absent, holds '!' (set()/delete() ran during a load:
-- that load may not write, a new caller may load at once), or holds a token whose time has
-- passed. The key outlives the lease (ARGV[4]) so that cache_store can tell whether anything
-- touched it since this script wrote it. A value without a time (written by something
-- else) holds the lease for the key's PTTL.
-- #include _prelude
local lease_ms = arg_int(2, 'lease ttl', 1)
local key_ms = arg_int(4, 'lease key lifetime', lease_ms)
local mode = ARGV[3]
if mode ~= '1' then
  local value = redis.call('GET', KEYS[1])
  if value and (mode == '0' or redis.sha1hex(value) ~= mode) then
    return {'hit', value, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2])}
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= '!' then
  local due = tonumber(string.match(holder, ':(%d+)$'))
  if due == nil then
    return {'held', redis.call('PTTL', KEYS[3])}
  end
  if due > now then
    return {'held', due - now}
  end
end
redis.call('SET', KEYS[3], ARGV[1] .. ':' .. string.format('%d', now + lease_ms), 'PX', key_ms)
return {'acquired'}
