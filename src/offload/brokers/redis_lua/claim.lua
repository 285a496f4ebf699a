-- claim.lua: take up to `limit` due jobs of one queue under fresh leases.
-- Flags: allow-oom (it runs while Redis is over maxmemory, as it did by EVAL: it writes little)
-- KEYS[1]  the queue's `ready` key
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] queue  ARGV[4] limit  ARGV[5] lease expiry
-- ARGV[6] worker id  ARGV[7] token base (the i-th job gets base + i)
-- Touches: Q ready, delayed, running, pend, counts, ctr, wake; the claimed job hashes.
-- Promotes due scheduled/retrying jobs, pops by priority then due time (FIFO by seq),
-- marks them running with attempts + 1.
-- Returns {next due time or '', then per job: id, m, payload, attempts, recoveries}.
local q, limit, lease = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local worker, base = ARGV[6], tonumber(ARGV[7])
local qb, jb = bases(q)

local due = redis.call('ZRANGEBYSCORE', qb .. 'delayed', '-inf', NOW_S, 'LIMIT', '0',
  num(math.max(limit, 1000)))
for _, id in ipairs(due) do
  local jk = jb .. 'j:' .. id
  local v = redis.call('HMGET', jk, 'm', 'r', 'sq', 's')
  zset(qb .. 'delayed', id, false)
  if v[4] then
    local M = meta(v[1])
    local run_at = tonumber(v[2] or '') or M[12]
    zset(qb .. 'ready', ready_member(tonumber(v[3]), id), num(ready_score(M[3], run_at)))
    redis.call('HSET', jk, 's', 'queued')
    cnt(qb, v[4], -1)
    cnt(qb, 'queued', 1)
  end
end
if #due > 0 then flush() end

local out = {''}
local popped = {}
if limit > 0 then
  -- ZPOPMIN, without the scores it would format (%.17g) for the script to parse back
  local last = num(limit - 1)
  popped = redis.call('ZRANGE', qb .. 'ready', '0', last)
  if #popped > 0 then redis.call('ZREMRANGEBYRANK', qb .. 'ready', '0', last) end
end
local n = 0
for i = 1, #popped do
  local id = string.sub(popped[i], 13)
  local jk = jb .. 'j:' .. id
  local v = redis.call('HMGET', jk, 'm', 'p', 'a', 'rc', 'wd')
  if v[1] then
    n = n + 1
    local M = meta(v[1])
    local a = tonumber(v[3] or '0') + 1
    local token = string.format('%d', base + n)
    if v[5] then
      redis.call('HSET', jk, 's', 'running', 'a', num(a), 't', token, 'le', lease, 'st', NOW_S,
        'w', worker)
    else
      redis.call('HSET', jk, 's', 'running', 'a', num(a), 't', token, 'le', lease, 'st', NOW_S,
        'w', worker, 'wd', '1')
    end
    zset(qb .. 'running', id, lease)
    zset(qb .. 'pend', id, false)
    ctr(qb, M[1], 'started', 1)
    if not v[5] then
      ctr(qb, M[1], 'waited', 1)
      ctr(qb, M[1], 'wait_s', math.max(0, NOW - M[13]))
    end
    local k = 1 + 5 * (n - 1)
    out[k + 1] = id
    out[k + 2] = v[1]
    out[k + 3] = v[2]
    out[k + 4] = a
    out[k + 5] = tonumber(v[4] or '0')
  end
end
cnt(qb, 'queued', -n)
cnt(qb, 'running', n)
flush()
-- fewer than asked for: the ready set is empty now
if #popped < limit or redis.call('ZCARD', qb .. 'ready') == 0 then
  redis.call('DEL', qb .. 'wake')
end
out[1] = redis.call('ZRANGE', qb .. 'delayed', '0', '0', 'WITHSCORES')[2] or ''
return out
