-- requeue.lua: move dead or cancelled jobs back to queued with fresh attempts (their
-- error history is kept).
-- KEYS[1]  P:id:<first id> (routing)
-- ARGV[1] prefix  ARGV[2] now  ARGV[3..] job ids
-- Touches: P:id:<id>, then each job's queue keys and hash.
-- Returns the number of jobs requeued.
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local q = redis.call('GET', P .. ':id:' .. id)
  if q then
    local qb, jb = bases(q)
    local jk = jb .. 'j:' .. id
    local f = load(jk)
    if f.s == 'dead' or f.s == 'cancelled' then
      n = n + 1
      zset(qb .. 'expiring', FINAL_CODE[f.s] .. id, false)
      zset(qb .. 'done', id, false)
      cnt(qb, f.s, -1)
      redis.call('PERSIST', jk)
      redis.call('PERSIST', P .. ':id:' .. id)
      redis.call('HDEL', jk, 'st', 'f', 'x', 'res', 'cr', 'wd', 't', 'le')
      if f.dk then
        local holder = redis.call('HGET', qb .. 'dedupe', f.dk)
        if holder and holder ~= id then
          redis.call('HDEL', jk, 'dk')
        else
          redis.call('HSET', qb .. 'dedupe', f.dk, id)
        end
      end
      local seq = next_seq(qb)
      local state = enter(qb, id, f.ky or nil, tonumber(f.kl), tonumber(f.pr), NOW, seq)
      redis.call('HSET', jk, 's', state, 'a', 0, 'rc', 0, 'e', NOW, 'r', NOW, 'du', NOW,
        'sq', seq, 'ad', NOW)
      arrive(qb, id, f.n, NOW, seq, state)
    end
  end
end
flush()
return n
