-- settle.lua: record the outcomes of a batch of deliveries, each fenced on its own.
-- KEYS[1]  the first delivery's queue `running` key (routing)
-- ARGV[1] prefix  ARGV[2] now
-- ARGV[3] msgpack list of {op, job id, queue, lease token, delay_s, blob index,
--         follow-up request tuples}; op: a ack, r retry, b bury, l release, c cancelled;
--         the blob is the result (ack) or the error record as JSON (others), 0 for none.
-- ARGV[4..] blobs and follow-up payloads, referenced by index.
-- Touches: each delivery's queue keys and job hash; for follow-ups, their queues' keys
-- and P:id:<id> (in one atomic step with the ack or bury).
-- Returns per settlement: 1 recorded, 0 refused (the lease is gone; nothing changed).

local function requeue_later(qb, jb, id, f, jk, run_at, state)
  zset(qb .. 'running', id, false)
  redis.call('HDEL', jk, 't', 'le')
  redis.call('HSET', jk, 's', state, 'r', num(run_at))
  zset(qb .. 'pend', id, num(f.M[11]))
  cnt(qb, 'running', -1)
  cnt(qb, state, 1)
end

local function apply(s, qb, jb, f)
  local op, id = s[1], s[2]
  local jk = jb .. 'j:' .. id
  local blob = s[6] > 0 and ARGV[s[6]] or nil
  if op == 'l' then
    redis.call('HSET', jk, 'a', num(tonumber(f.a) - 1))
    local run_at = NOW + s[5]
    local state = 'queued'
    if run_at > NOW then state = 'scheduled' end
    WAKE[qb] = (WAKE[qb] or 0) + 1
    if state == 'queued' then
      zset(qb .. 'ready', ready_member(tonumber(f.sq), id), num(ready_score(f.M[3], run_at)))
    else
      zset(qb .. 'delayed', id, num(run_at))
    end
    requeue_later(qb, jb, id, f, jk, run_at, state)
    return
  end
  ctr(qb, f.M[1], 'service_s', NOW - tonumber(f.st or NOW))
  if op == 'r' then
    append_error(jk, blob)
    local run_at = NOW + s[5]
    zset(qb .. 'delayed', id, num(run_at))
    WAKE[qb] = (WAKE[qb] or 0) + 1
    ctr(qb, f.M[1], 'retried', 1)
    requeue_later(qb, jb, id, f, jk, run_at, 'retrying')
  elseif op == 'a' then
    finish(qb, jb, id, f, 'succeeded', blob)
    admit_all(s[7])
  elseif op == 'b' then
    append_error(jk, blob)
    finish(qb, jb, id, f, 'dead')
    admit_all(s[7])
  else
    if blob then append_error(jk, blob) end
    finish(qb, jb, id, f, 'cancelled')
  end
end

local out = {}
for i, s in ipairs(cmsgpack.unpack(ARGV[3])) do
  local qb, jb = bases(s[3])
  local f = load(jb .. 'j:' .. s[2], s[1] == 'l' and 11 or 7)
  if holds(f, s[4]) then
    apply(s, qb, jb, f)
    out[i] = 1
  else
    out[i] = 0
  end
end
flush()
return out
