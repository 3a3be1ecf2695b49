-- A room service takes a room under its fence, unless a newer owner has:
-- KEYS[1] is the room's meta, ARGV[1] the fence. Returns -1 when taken,
-- else the newer fence that stands.
local stored = redis.call('HGET', KEYS[1], 'fence')
if stored and tonumber(stored) > tonumber(ARGV[1]) then
  return tonumber(stored)
end
redis.call('HSET', KEYS[1], 'fence', ARGV[1])
return -1
