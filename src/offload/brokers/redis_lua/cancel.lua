-- cancel.lua: cancel pending jobs at once; flag running ones for their next extend.
-- KEYS[1]  P:id:<first id> (routing)
-- ARGV[1] prefix  ARGV[2] now  ARGV[3..] job ids
-- Touches: P:id:<id> (to find each job's queue), then that queue's keys and job hash.
-- Returns each job's state afterwards, nil for unknown ids.
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local q = redis.call('GET', P .. ':id:' .. id)
  local state = false
  if q then
    local qb, jb = bases(q)
    local f = load(jb .. 'j:' .. id)
    state = f.s
    if PENDING[state] then
      finish(qb, jb, id, f, 'cancelled')
      state = 'cancelled'
    elseif state == 'running' then
      redis.call('HSET', jb .. 'j:' .. id, 'cr', 1)
    end
  end
  out[i - 2] = state
end
flush()
return out
