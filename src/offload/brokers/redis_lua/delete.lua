-- delete.lua: delete jobs that are not running, by id or by scanning a queue.
-- Flags: allow-oom (it frees memory)
-- KEYS[1]  P:id:<first id>, or the queue's `all` key (routing)
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] 'ids' or 'queue'
-- ids:   ARGV[4..] job ids                      -> returns {deleted}
-- queue: ARGV[4] queue  ARGV[5] scan from this seq down ('' for the newest)
--        ARGV[6] how many to scan  ARGV[7..] the states to delete
--        -> returns {deleted, next seq to scan from, or '' when the scan is done}
-- Touches: P:id:<id>, each job's queue keys, hash and notice list.
local n = 0
if ARGV[3] == 'ids' then
  for i = 4, #ARGV do
    local id = ARGV[i]
    local q = redis.call('GET', P .. ':id:' .. id)
    if q then
      local qb, jb = bases(q)
      if delete_job(qb, jb, id, load(jb .. 'j:' .. id)) then n = n + 1 end
    end
  end
  flush()
  return {n}
end
local q, top, count = ARGV[4], ARGV[5], tonumber(ARGV[6])
local qb, jb = bases(q)
local wanted = {}
for i = 7, #ARGV do wanted[ARGV[i]] = true end
local max = top == '' and '+inf' or ('(' .. top)
local ids = redis.call('ZREVRANGEBYSCORE', qb .. 'all', max, '-inf', 'WITHSCORES', 'LIMIT', 0, count)
for i = 1, #ids, 2 do
  local id = ids[i]
  local f = load(jb .. 'j:' .. id)
  if wanted[f.s] and delete_job(qb, jb, id, f) then n = n + 1 end
end
flush()
if #ids < 2 * count then return {n, ''} end
return {n, ids[#ids]}
