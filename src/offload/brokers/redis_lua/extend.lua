-- extend.lua: renew the leases of deliveries that still hold them.
-- KEYS[1]  the first delivery's queue `running` key (routing)
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] new lease expiry
-- ARGV[4] msgpack list of {job id, queue, lease token}
-- Touches: Q running of each queue; the job hashes.
-- Returns per delivery: 0 lost, 1 ok, 2 ok and cancel requested.
local lease = ARGV[3]
local out = {}
for i, d in ipairs(cmsgpack.unpack(ARGV[4])) do
  local qb, jb = bases(d[2])
  local jk = jb .. 'j:' .. d[1]
  local v = redis.call('HMGET', jk, 's', 't', 'le', 'cr')
  if v[1] == 'running' and v[2] == d[3] and tonumber(v[3]) > NOW then
    redis.call('HSET', jk, 'le', lease)
    zset(qb .. 'running', d[1], lease)
    out[i] = v[4] and 2 or 1
  else
    out[i] = 0
  end
end
flush()
return out
