-- settle.lua: record the outcomes of a batch of deliveries, each fenced on its own.
-- KEYS[1]  the first delivery's queue `running` key (routing)
-- ARGV[1] prefix  ARGV[2] now
-- ARGV[3] msgpack sequence of rows of 7: op, job id, queue, lease token, delay_s, blob
--         index, list of follow-up request tuples; op: a ack, r retry, b bury, l release,
--         c cancelled; the blob is the result (ack) or the error record as JSON (others),
--         0 for none.
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

local function apply(op, id, delay, bi, follow, qb, jb, f)
  local jk = jb .. 'j:' .. id
  local blob = bi > 0 and ARGV[bi] or nil
  if op == 'l' then
    redis.call('HSET', jk, 'a', num(tonumber(f.a) - 1))
    local run_at = NOW + delay
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
    local run_at = NOW + delay
    zset(qb .. 'delayed', id, num(run_at))
    WAKE[qb] = (WAKE[qb] or 0) + 1
    ctr(qb, f.M[1], 'retried', 1)
    requeue_later(qb, jb, id, f, jk, run_at, 'retrying')
  elseif op == 'a' then
    finish(qb, jb, id, f, 'succeeded', blob)
    admit_all(follow)
  elseif op == 'b' then
    append_error(jk, blob)
    finish(qb, jb, id, f, 'dead')
    admit_all(follow)
  else
    if blob then append_error(jk, blob) end
    finish(qb, jb, id, f, 'cancelled')
  end
end

local out, n, rows, pos = {}, 0, ARGV[3], 0
while pos >= 0 and pos < #rows do
  local op, id, q, token, delay, bi, follow
  pos, op, id, q, token, delay, bi, follow = cmsgpack.unpack_limit(rows, 7, pos)
  local qb, jb = bases(q)
  local f = load(jb .. 'j:' .. id, op == 'l' and 11 or 7)
  n = n + 1
  if holds(f, token) then
    apply(op, id, delay, bi, follow, qb, jb, f)
    out[n] = 1
  else
    out[n] = 0
  end
end
flush()
return out
