-- claim.lua: take up to `limit` due jobs of one queue under fresh leases.
-- KEYS[1]  the queue's `ready` key
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] queue  ARGV[4] limit  ARGV[5] lease expiry
-- ARGV[6] worker id  ARGV[7] token base (the i-th job gets base + i)
-- Touches: Q ready, delayed, running, pend, counts, ctr, wake; the claimed job hashes.
-- Promotes due scheduled/retrying jobs, pops by priority then due time (FIFO by seq),
-- marks them running with attempts + 1.
-- Returns {msgpack rows {id, name, kind, attempts, max_attempts, recoveries,
--          enqueued_at, priority[, key]}, next due time or '', payload...}.
local q, limit, lease = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local worker, base = ARGV[6], tonumber(ARGV[7])
local qb, jb = bases(q)

local due = redis.call('ZRANGEBYSCORE', qb .. 'delayed', '-inf', NOW, 'LIMIT', 0, math.max(limit, 1000))
for _, id in ipairs(due) do
  local jk = jb .. 'j:' .. id
  local v = redis.call('HMGET', jk, 'pr', 'r', 'sq', 's')
  zset(qb .. 'delayed', id, false)
  if v[4] then
    zset(qb .. 'ready', ready_member(tonumber(v[3]), id), ready_score(tonumber(v[1]), tonumber(v[2])))
    redis.call('HSET', jk, 's', 'queued')
    cnt(qb, v[4], -1)
    cnt(qb, 'queued', 1)
  end
end
if #due > 0 then flush() end

local rows, payloads = {}, {}
local popped = {}
if limit > 0 then popped = redis.call('ZPOPMIN', qb .. 'ready', limit) end
local n = 0
for i = 1, #popped, 2 do
  local id = string.sub(popped[i], 13)
  local jk = jb .. 'j:' .. id
  local v = redis.call('HMGET', jk, 'n', 'k', 'p', 'a', 'ma', 'rc', 'e', 'pr', 'ky', 'wd', 'du')
  if v[1] then
    n = n + 1
    local a = tonumber(v[4]) + 1
    redis.call('HSET', jk, 's', 'running', 'a', a, 't', string.format('%d', base + n),
      'le', lease, 'st', NOW, 'w', worker)
    zset(qb .. 'running', id, lease)
    zset(qb .. 'pend', id, false)
    ctr(qb, v[1], 'started', 1)
    if not v[10] then
      redis.call('HSET', jk, 'wd', 1)
      ctr(qb, v[1], 'waited', 1)
      ctr(qb, v[1], 'wait_s', math.max(0, NOW - tonumber(v[11])))
    end
    local row = {id, v[1], v[2], a, tonumber(v[5]), tonumber(v[6]), tonumber(v[7]), tonumber(v[8])}
    if v[9] then row[9] = v[9] end
    rows[n] = row
    payloads[n] = v[3]
  end
end
cnt(qb, 'queued', -n)
cnt(qb, 'running', n)
flush()
if redis.call('ZCARD', qb .. 'ready') == 0 then redis.call('DEL', qb .. 'wake') end
local nxt = redis.call('ZRANGE', qb .. 'delayed', 0, 0, 'WITHSCORES')[2] or ''
local out = {n > 0 and cmsgpack.pack(rows) or '', nxt}
for i = 1, n do out[i + 2] = payloads[i] end
return out
