-- recover.lua: return one queue's expired leases to queued, or to dead after
-- max_recoveries ("lease_expired"). Safe to run anywhere, any number of times at once.
-- KEYS[1]  the queue's `running` key
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] queue  ARGV[4] limit
-- Touches: Q running, ready, pend, expiring, done, counts, ctr, keys, kb:*, dedupe, wake;
-- the job hashes and their P:id:<id> (EXPIRE only).
-- Returns the number of jobs recovered.
local q, limit = ARGV[3], tonumber(ARGV[4])
local qb, jb = bases(q)
local MESSAGE = 'the worker stopped renewing its lease (crashed, killed or hung)'
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', qb .. 'running', '-inf', NOW, 'LIMIT', 0, limit)) do
  local jk = jb .. 'j:' .. id
  local f = load(jk)
  if f.s ~= 'running' or tonumber(f.le) > NOW then
    if f.s ~= 'running' then zset(qb .. 'running', id, false) end
  else
    n = n + 1
    append_error(jk, '{"reason":"lease_expired","message":"' .. MESSAGE .. '","attempt":' .. (f.a or '0')
      .. ',"at":' .. ARGV[2] .. ',"worker_id":' .. cjson.encode(f.w or '') .. '}')
    if tonumber(f.rc or '0') >= f.M[8] then
      finish(qb, jb, id, f, 'dead')
    else
      zset(qb .. 'running', id, false)
      redis.call('HDEL', jk, 't', 'le')
      -- back at its old place (its due time): it has waited its turn once
      redis.call('HSET', jk, 's', 'queued', 'rc', tonumber(f.rc or '0') + 1)
      local run_at = tonumber(f.r or '') or f.M[12]
      zset(qb .. 'ready', ready_member(tonumber(f.sq), id), ready_score(f.M[3], run_at))
      zset(qb .. 'pend', id, f.M[11])
      WAKE[qb] = (WAKE[qb] or 0) + 1
      ctr(qb, f.M[1], 'recovered', 1)
      cnt(qb, 'running', -1)
      cnt(qb, 'queued', 1)
    end
  end
end
flush()
return n
