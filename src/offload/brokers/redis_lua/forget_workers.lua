-- forget_workers.lua: drop workers whose registration expired (by the broker's clock).
-- Flags: allow-oom (it frees memory)
-- KEYS[1]  P:{workers}:exp  ZSET worker id -> expires_at
-- KEYS[2]  P:{workers}:info HASH worker id -> msgpack WorkerInfo
-- ARGV[1] prefix  ARGV[2] now
-- Returns the number of workers forgotten.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', NOW)
for i = 1, #ids, 1000 do
  local part = {unpack(ids, i, math.min(i + 999, #ids))}
  redis.call('ZREM', KEYS[1], unpack(part))
  redis.call('HDEL', KEYS[2], unpack(part))
end
return #ids
