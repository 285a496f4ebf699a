-- extend.lua: renew the leases of deliveries that still hold them.
-- KEYS[1]  the first delivery's queue `running` key (routing)
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] new lease expiry
-- ARGV[4] msgpack sequence of job id, queue, lease token for each delivery
-- Touches: Q running of each queue; the job hashes.
-- Returns per delivery: 0 lost, 1 ok, 2 ok and cancel requested.
local lease = ARGV[3]
local out, n, rows, pos = {}, 0, ARGV[4], 0
while pos >= 0 and pos < #rows do
  local id, q, token
  pos, id, q, token = cmsgpack.unpack_limit(rows, 3, pos)
  local qb, jb = bases(q)
  local jk = jb .. 'j:' .. id
  local v = redis.call('HMGET', jk, 's', 't', 'le', 'cr')
  n = n + 1
  if v[1] == 'running' and v[2] == token and tonumber(v[3]) > NOW then
    redis.call('HSET', jk, 'le', lease)
    zset(qb .. 'running', id, lease)
    out[n] = v[4] and 2 or 1
  else
    out[n] = 0
  end
end
flush()
return out
