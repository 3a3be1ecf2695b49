-- One batch of room writes, each room's applied only while no newer owner
-- has claimed the room: its stored fence is at most the writer's.
-- KEYS: six per room: meta, config, mutes, bans, whitelist, history.
-- ARGV, per room: the writer's fence, the number of commands, then per
-- command: its name, the index of its key among the room's six, the number
-- of its arguments, the arguments.
-- Returns the (0-based) indexes of the rooms refused, each followed by the
-- fence that refused it.
local refused = {}
local at = 1
for room = 0, #KEYS / 6 - 1 do
  local base = room * 6
  local fence = ARGV[at]
  local commands = tonumber(ARGV[at + 1])
  at = at + 2
  local stored = redis.call('HGET', KEYS[base + 1], 'fence')
  local ok = not stored or tonumber(stored) <= tonumber(fence)
  if not ok then
    refused[#refused + 1] = room
    refused[#refused + 1] = tonumber(stored)
  end
  for _ = 1, commands do
    local args = tonumber(ARGV[at + 2])
    if ok then
      redis.call(ARGV[at], KEYS[base + tonumber(ARGV[at + 1])], unpack(ARGV, at + 3, at + 2 + args))
    end
    at = at + 3 + args
  end
  if ok then
    redis.call('HSET', KEYS[base + 1], 'fence', fence)
  end
end
return refused
