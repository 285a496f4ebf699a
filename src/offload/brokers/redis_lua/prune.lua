-- prune.lua: delete one queue's final jobs whose TTL (by the broker's clock) has passed.
-- Flags: allow-oom (it frees memory)
-- KEYS[1]  the queue's `expiring` key
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] queue  ARGV[4] limit
-- Touches: Q expiring, all, done, counts; the job hashes, notices and P:id:<id>.
-- A record Redis already expired by its safety-net EXPIRE is accounted for the same
-- way: the expiring member carries the state's letter.
-- Returns the number of jobs deleted.
local q, limit = ARGV[3], tonumber(ARGV[4])
local qb, jb = bases(q)
local STATE = {s = 'succeeded', d = 'dead', c = 'cancelled'}
local members = redis.call('ZRANGEBYSCORE', qb .. 'expiring', '-inf', NOW, 'LIMIT', 0, limit)
for _, m in ipairs(members) do
  local id = string.sub(m, 2)
  redis.call('DEL', jb .. 'j:' .. id, jb .. 'n:' .. id)
  local ik = P .. ':id:' .. id
  if redis.call('GET', ik) == q then redis.call('DEL', ik) end
  zset(qb .. 'expiring', m, false)
  zset(qb .. 'all', id, false)
  zset(qb .. 'done', id, false)
  cnt(qb, STATE[string.sub(m, 1, 1)], -1)
end
flush()
return #members
