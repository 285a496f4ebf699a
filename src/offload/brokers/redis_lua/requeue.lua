-- requeue.lua: move dead or cancelled jobs back to queued with fresh attempts (their
-- error history is kept).
-- Flags: allow-oom (it moves jobs; by EVAL its first write, PERSIST, was allowed too)
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
      redis.call('HDEL', jk, 'st', 'f', 'x', 'res', 'cr', 'wd', 't', 'le', 'r', 'a', 'rc')
      local M = f.M
      if M[6] then
        local holder = redis.call('HGET', qb .. 'dedupe', M[6])
        if holder and holder ~= id then
          M[6] = nil -- another unfinished job holds the dedupe key now
        else
          redis.call('HSET', qb .. 'dedupe', M[6], id)
        end
      end
      M[11], M[12], M[13] = NOW, NOW, NOW
      local seq = next_seq(qb)
      local state = enter(qb, id, M[4], M[5], M[3], NOW, seq)
      local seq_s = num(seq)
      redis.call('HSET', jk, 'm', cmsgpack.pack(M), 's', state, 'sq', seq_s)
      arrive(qb, id, M[1], NOW, seq_s, state)
    end
  end
end
flush()
return n
