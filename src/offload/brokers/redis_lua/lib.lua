-- lib.lua: helpers shared by the offload scripts. Not a script of its own: each script
-- file is the body of a function(KEYS, ARGV) wrapped by script() below, after this file
-- (see Scripts in _redis_support.py): once per server in a Redis Functions library
-- (Redis >= 7), or with this file prepended to each script for EVALSHA (Redis 6.2).
-- Every script is called with
--   ARGV[1] = key prefix P      ARGV[2] = now (the broker's clock, Unix seconds)
--
-- A script's `-- Flags:` line gives its Functions flags. While Redis is over maxmemory
-- (noeviction) a function without flags is refused whole, as EVAL refuses a script at
-- its first write that may grow memory; `allow-oom` marks those EVAL let run (they free
-- memory, or their first write cannot grow it), `no-writes` the read-only ones.
--
-- Keys (t = hash tag of a queue: the part after its last '@', so every `group@topic`
-- queue shares its topic's slot; Q = P:{t}:q:<byte length of queue>:<queue>:):
--   P:id:<id>       STRING id -> queue: the id index (the one cross-slot key)
--   P:{t}:j:<id>    HASH   the job record: m (the immutable fields, msgpack, built by
--                          Python: see M below), p (payload), s (state), sq (seq), and
--                          as they are set: a, rc, r (run_at once changed), wd, st, t,
--                          le, w, f, x, res, er, pg, pm, cr, wt (see RECORD)
--   P:{t}:n:<id>    LIST   "finished" notice for wait_job, 60 s TTL
--   Q ready         ZSET   '%012x'(seq)..id -> (1000 - priority) * 2^42 + run_at in ms
--   Q delayed       ZSET   id -> run_at                 (scheduled, retrying)
--   Q running       ZSET   id -> lease_expires
--   Q pend          ZSET   id -> enqueued_at            (every pending job)
--   Q all           ZSET   id -> seq                    (every stored job; listings)
--   Q expiring      ZSET   <state letter>..id -> expires_at   (final jobs; prune)
--   Q done          ZSET   id -> finished_at            (succeeded and dead; timings)
--   Q counts        HASH   state -> jobs
--   Q ctr           HASH   '<counter>:<task name>' -> value (Little's-Law counters)
--   Q meta          HASH   seq
--   Q dedupe        HASH   dedupe key -> id of the unfinished job holding it
--   Q keys          HASH   job key -> slots taken (running, queued or retrying)
--   Q kb:<key>      LIST   ids blocked behind a full key, oldest first
--   Q wake          LIST   wake-up hints for idle claims (at most 32 entries)
--
-- M, the decoded m field: 1 name, 2 kind, 3 priority, 4 key, 5 key_limit, 6 dedupe_key,
-- 7 max_attempts, 8 max_recoveries, 9 result_ttl_s, 10 dead_ttl_s, 11 enqueued_at,
-- 12 run_at, 13 due_at, 14 queue (nil where absent). requeue rewrites it.
--
-- Writes to sorted sets, counts and counters are collected in tables and written once
-- per script by flush(): a claim of 100 jobs makes one ZADD, not 100. Nothing reads a
-- sorted set after writing it in the same script without calling flush() first.

-- The call's prefix, clock (a number, and as the caller wrote it: a stored instant is
-- written as that string, never converted back) and ARGV: set by script().
local P, NOW, NOW_S, ARGS
local EPOCH = 1700000000
local SAFETY_S = 86400 -- native EXPIRE beyond the clock-driven TTL: a net, never the rule
local WAKE_CAP = 32
local FINAL_CODE = {succeeded = 's', dead = 'd', cancelled = 'c'}
local PENDING = {scheduled = true, queued = true, blocked = true, retrying = true}
local FLOAT_CTR = {wait_s = true, service_s = true, system_s = true, in_system_enq_s = true}

local ZS, CNT, CTR, SEQ, WAKE -- writes collected for flush()
local EXP -- per call: ttl -> {expiry instant as a string, safety-net EXPIRE seconds}
local NUMS -- per call: a fractional number -> its string (see num)
local SMALL = {} -- 0 .. 1023 -> its string, kept from call to call (counts, attempts)

-- A number as redis.call would write it (%.17g), but cheaper: redis.call formats every
-- number argument with %.17g, which costs as much as a small command. Integers below
-- 1e15 are written by %d (the same digits); small ones are kept, fractional ones once
-- per call.
local function num(x)
  local s = SMALL[x]
  if s then return s end
  if x == math.floor(x) and x < 1e15 and x > -1e15 then
    s = string.format('%d', x)
    if x >= 0 and x < 1024 then SMALL[x] = s end
    return s
  end
  if x ~= x then return string.format('%.17g', x) end -- NaN: no table key
  s = NUMS[x]
  if not s then
    s = string.format('%.17g', x)
    NUMS[x] = s
  end
  return s
end

local function tag_of(q)
  local t = string.match(q, '^.*@(.*)$') or q
  if t == '' then t = q end
  return t
end

-- The queue's key base Q and the job/notice base P:{t}:, cached for the prefix P (a
-- library's locals outlive a call; the cache is only ever a cache).
local BASES, BASES_N = {}, 0
local function bases(q)
  local b = BASES[q]
  if not b then
    if BASES_N >= 1000 then BASES, BASES_N = {}, 0 end
    local jb = P .. ':{' .. tag_of(q) .. '}:'
    b = {jb .. 'q:' .. #q .. ':' .. q .. ':', jb}
    BASES[q] = b
    BASES_N = BASES_N + 1
  end
  return b[1], b[2]
end

-- A script body as the function Redis calls: it first sets the call's prefix, clock and
-- arguments and empties the write buffers (in a library they would otherwise hold what a
-- failed earlier call left), and lets go of the arguments when the body returns.
local function done(...)
  ARGS = nil
  return ...
end
local function script(body)
  return function(keys, argv)
    if argv[1] ~= P then BASES, BASES_N = {}, 0 end
    P, NOW, NOW_S, ARGS = argv[1], tonumber(argv[2]), argv[2], argv
    ZS, CNT, CTR, SEQ, WAKE, EXP, NUMS = {}, {}, {}, {}, {}, {}, {}
    return done(body(keys, argv))
  end
end

local function zset(key, member, score)
  local t = ZS[key]
  if not t then t = {}; ZS[key] = t end
  t[member] = score
end

local function cnt(qb, state, d)
  local t = CNT[qb]
  if not t then t = {}; CNT[qb] = t end
  t[state] = (t[state] or 0) + d
end

-- Counters by queue, then task name, then field (written as '<field>:<name>').
local function ctr(qb, name, field, d)
  local t = CTR[qb]
  if not t then t = {}; CTR[qb] = t end
  local c = t[name]
  if not c then c = {}; t[name] = c end
  c[field] = (c[field] or 0) + d
end

local PENDING_STATES = {'scheduled', 'queued', 'blocked', 'retrying'}
local function pending_depth(qb)
  local v = redis.call('HMGET', qb .. 'counts', unpack(PENDING_STATES))
  local d = CNT[qb] or {}
  local n = 0
  for i, s in ipairs(PENDING_STATES) do
    n = n + tonumber(v[i] or '0') + (d[s] or 0)
  end
  return n
end

local function next_seq(qb)
  local s = SEQ[qb]
  if not s then s = tonumber(redis.call('HGET', qb .. 'meta', 'seq') or '0') end
  s = s + 1
  SEQ[qb] = s
  return s
end

local function ready_member(seq, id)
  return string.format('%012x', seq) .. id
end

local function ready_score(prio, run_at)
  prio = math.max(-1000, math.min(1000, prio))
  local ms = math.floor((run_at - EPOCH) * 1000)
  if ms < 0 then ms = 0 elseif ms > 4398046511103 then ms = 4398046511103 end
  return (1000 - prio) * 4398046511104 + ms
end

-- Put a job that may run into queued (due) or scheduled (later); returns the state.
local function place(qb, id, prio, run_at, seq)
  WAKE[qb] = (WAKE[qb] or 0) + 1
  if run_at > NOW then
    zset(qb .. 'delayed', id, run_at)
    return 'scheduled'
  end
  zset(qb .. 'ready', ready_member(seq, id), num(ready_score(prio, run_at)))
  return 'queued'
end

-- Take a key slot or wait behind the key; then place. Returns the new state.
local function enter(qb, id, key, kl, prio, run_at, seq)
  if key then
    local kb = qb .. 'kb:' .. key
    local active = tonumber(redis.call('HGET', qb .. 'keys', key) or '0')
    if active >= kl or redis.call('EXISTS', kb) == 1 then
      redis.call('RPUSH', kb, id)
      return 'blocked'
    end
    redis.call('HINCRBY', qb .. 'keys', key, 1)
  end
  return place(qb, id, prio, run_at, seq)
end

-- seq: the job's seq as a string
local function arrive(qb, id, name, enq, seq, state)
  cnt(qb, state, 1)
  ctr(qb, name, 'enqueued', 1)
  ctr(qb, name, 'in_system', 1)
  ctr(qb, name, 'in_system_enq_s', enq - EPOCH)
  zset(qb .. 'pend', id, num(enq))
  zset(qb .. 'all', id, seq)
end

-- Store one request: the values of the tuple built by _redis_codec.ArgPack.request
-- (id, queue, name, enqueued_at, priority, run_at, key, key_limit, dedupe_key, max_depth,
-- ARGV index of m, ARGV index of the payload), with m and payload as strings;
-- `bounded`: refuse it past max_depth. Returns status, job id, depth (as EnqueueOutcome).
local function admit(id, q, name, enq, prio, run_at, key, kl, dk, max_depth, m, payload,
                     bounded)
  local ik = P .. ':id:' .. id
  if not redis.call('SET', ik, q, 'NX') then return 'duplicate', id, 0 end
  local qb, jb = bases(q)
  if dk then
    local holder = redis.call('HGET', qb .. 'dedupe', dk)
    if holder then
      redis.call('DEL', ik)
      return 'duplicate', holder, 0
    end
  end
  if bounded and max_depth then
    local depth = pending_depth(qb)
    if depth >= max_depth then
      redis.call('DEL', ik)
      return 'full', id, depth
    end
  end
  local seq = next_seq(qb)
  local state = enter(qb, id, key, kl, prio, run_at, seq)
  local seq_s = num(seq)
  redis.call('HSET', jb .. 'j:' .. id, 'm', m, 'p', payload, 's', state, 'sq', seq_s)
  if dk then redis.call('HSET', qb .. 'dedupe', dk, id) end
  arrive(qb, id, name, enq, seq_s, state)
  return 'queued', id, 0
end

-- M, the table of a job's m field. Python writes m as a msgpack array of 14 (one byte of
-- header, 0x9e), whose values decode several times cheaper as a sequence into one table
-- constructor than as an array that cmsgpack grows field by field. (A Lua-written m with
-- a nil inside is a map, decoded as before.)
local function meta(m)
  if string.byte(m, 1) == 0x9e then return {cmsgpack.unpack(string.sub(m, 2))} end
  return cmsgpack.unpack(m)
end

-- The fields a state change needs, as a table (false where absent).
local LOAD = {'s', 't', 'le', 'm', 'st', 'sq', 'wt', 'a', 'rc', 'r', 'w'}
-- n: how many of LOAD to read (settle's ack needs the first 7 only)
local function load(jk, n)
  local v = redis.call('HMGET', jk, unpack(LOAD, 1, n or #LOAD))
  -- one constructor: the table is sized once, not grown field by field
  return {s = v[1], t = v[2], le = v[3], m = v[4], st = v[5], sq = v[6], wt = v[7], a = v[8],
    rc = v[9], r = v[10], w = v[11], M = v[4] and meta(v[4])}
end


-- True while the delivery (token) still holds the job's lease (the fencing check).
local function holds(f, token)
  return f.s == 'running' and f.t == token and tonumber(f.le) > NOW
end

-- Take a job out of the structure its current state keeps it in.
local function leave(qb, id, f)
  local s = f.s
  if s == 'queued' then
    zset(qb .. 'ready', ready_member(tonumber(f.sq), id), false)
  elseif s == 'scheduled' or s == 'retrying' then
    zset(qb .. 'delayed', id, false)
  elseif s == 'blocked' then
    redis.call('LREM', qb .. 'kb:' .. f.M[4], 1, id)
  elseif s == 'running' then
    zset(qb .. 'running', id, false)
  end
  if PENDING[s] then zset(qb .. 'pend', id, false) end
end

local function append_error(jk, err)
  local old = redis.call('HGET', jk, 'er')
  redis.call('HSET', jk, 'er', old and (old .. '\n' .. err) or err)
end

-- A key slot was given back (or a blocked job left): let the oldest blocked jobs in.
local function free_key(qb, jb, key, held_slot)
  local kk, kb = qb .. 'keys', qb .. 'kb:' .. key
  local active = tonumber(redis.call('HGET', kk, key) or '0')
  if held_slot then active = active - 1 end
  while true do
    local nxt = redis.call('LINDEX', kb, 0)
    if not nxt then break end
    local njk = jb .. 'j:' .. nxt
    local v = redis.call('HMGET', njk, 'm', 'r', 'sq')
    local M = meta(v[1])
    if active >= M[5] then break end
    redis.call('LPOP', kb)
    active = active + 1
    local state = place(qb, nxt, M[3], tonumber(v[2] or '') or M[12], tonumber(v[3]))
    redis.call('HSET', njk, 's', state)
    cnt(qb, 'blocked', -1)
    cnt(qb, state, 1)
  end
  if active <= 0 and redis.call('EXISTS', kb) == 0 then
    redis.call('HDEL', kk, key)
  else
    redis.call('HSET', kk, key, active)
  end
end

-- Move a job to a final state and free what it held (key slot, dedupe key).
-- result: stored with the state change when given (an ack's result).
local function finish(qb, jb, id, f, state, result)
  local jk = jb .. 'j:' .. id
  leave(qb, id, f)
  local M = f.M
  local ttl = state == 'dead' and M[10] or M[9]
  local e = EXP[ttl] -- the jobs of a batch mostly share their TTL: convert it once
  if not e then
    e = {num(NOW + ttl), num(math.ceil(ttl) + SAFETY_S)}
    EXP[ttl] = e
  end
  local x = e[1]
  if result then
    redis.call('HSET', jk, 's', state, 'f', NOW_S, 'x', x, 'res', result)
  else
    redis.call('HSET', jk, 's', state, 'f', NOW_S, 'x', x)
  end
  zset(qb .. 'expiring', FINAL_CODE[state] .. id, x)
  if state ~= 'cancelled' and f.st then zset(qb .. 'done', id, NOW_S) end
  local enq, name = M[11], M[1]
  ctr(qb, name, 'system_s', NOW - enq)
  ctr(qb, name, 'in_system', -1)
  ctr(qb, name, 'in_system_enq_s', EPOCH - enq)
  ctr(qb, name, state, 1)
  cnt(qb, f.s, -1)
  cnt(qb, state, 1)
  if M[6] and redis.call('HGET', qb .. 'dedupe', M[6]) == id then
    redis.call('HDEL', qb .. 'dedupe', M[6])
  end
  if M[4] then free_key(qb, jb, M[4], f.s ~= 'blocked') end
  -- The safety net covers the record (payload, result: the bulk of a job); the small
  -- index entry and sorted-set members go with prune. (An EXPIRE costs as much as a
  -- sorted-set write, so this one is on purpose.)
  redis.call('EXPIRE', jk, e[2])
  if f.wt then
    local nk = jb .. 'n:' .. id
    redis.call('RPUSH', nk, 1)
    redis.call('EXPIRE', nk, 60)
  end
end

local function flush()
  for key, t in pairs(ZS) do
    local add, rem = {}, {}
    for m, s in pairs(t) do
      if s then add[#add + 1] = s; add[#add + 1] = m else rem[#rem + 1] = m end
    end
    for i = 1, #add, 4000 do redis.call('ZADD', key, unpack(add, i, math.min(i + 3999, #add))) end
    for i = 1, #rem, 2000 do redis.call('ZREM', key, unpack(rem, i, math.min(i + 1999, #rem))) end
  end
  ZS = {}
  for qb, t in pairs(CNT) do
    for state, d in pairs(t) do
      if d ~= 0 then redis.call('HINCRBY', qb .. 'counts', state, num(d)) end
    end
  end
  CNT = {}
  for qb, t in pairs(CTR) do
    for name, c in pairs(t) do
      for field, d in pairs(c) do
        if d ~= 0 then
          local op = FLOAT_CTR[field] and 'HINCRBYFLOAT' or 'HINCRBY'
          redis.call(op, qb .. 'ctr', field .. ':' .. name, num(d))
        end
      end
    end
  end
  CTR = {}
  for qb, s in pairs(SEQ) do redis.call('HSET', qb .. 'meta', 'seq', num(s)) end
  SEQ = {}
  for qb, n in pairs(WAKE) do
    local ones = {}
    for i = 1, math.min(n, WAKE_CAP) do ones[i] = '1' end
    if redis.call('LPUSH', qb .. 'wake', unpack(ones)) > WAKE_CAP then
      redis.call('LTRIM', qb .. 'wake', '0', num(WAKE_CAP - 1))
    end
  end
  WAKE = {}
end

-- Enqueue follow-ups unbounded.
local function admit_all(reqs)
  for _, r in ipairs(reqs) do
    admit(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], ARGS[r[11]], ARGS[r[12]],
      false)
  end
end

-- A job record as the values of these fields, in this order (job_record in Python).
local RECORD = {'m', 's', 'p', 'a', 'rc', 'r', 'st', 'f', 'res', 'er', 'pg', 'pm', 'cr', 'w',
  'le', 'sq'}
local function record(jk)
  local rec = redis.call('HMGET', jk, unpack(RECORD))
  if not rec[2] then return false end
  return rec
end

-- Delete a job that is not running (cancelling it first if unfinished); true if deleted.
local function delete_job(qb, jb, id, f)
  if not f.s or f.s == 'running' then return false end
  if not FINAL_CODE[f.s] then
    finish(qb, jb, id, f, 'cancelled')
    f.s = 'cancelled'
  end
  redis.call('DEL', jb .. 'j:' .. id, jb .. 'n:' .. id, P .. ':id:' .. id)
  zset(qb .. 'expiring', FINAL_CODE[f.s] .. id, false)
  zset(qb .. 'all', id, false)
  zset(qb .. 'done', id, false)
  cnt(qb, f.s, -1)
  return true
end

-- Topics. TB = P:{t}:t:<byte length of topic>:<topic>: with t = tag_of(topic), the same
-- tag as every `group@topic` queue, so a publish fans out inside one slot:
--   TB meta    HASH   next (offset), ret (retention_s or ''), max (max_events or ''), replays
--   TB log     STREAM entry id '<offset>-1'; fields i (event id), p (payload),
--                     a (published_at), k (key, if any), g (group keys JSON, if any)
--   TB groups  HASH   group -> JSON {a: max_attempts, r: max_recoveries, rt, dt, fs}
--   TB gc      HASH   group -> created_at
local function topic_base(topic)
  return P .. ':{' .. tag_of(topic) .. '}:t:' .. #topic .. ':' .. topic .. ':'
end

-- An event entry from XRANGE as a table of its fields (i, p, a, k, g; gk decoded).
local function event_of(entry)
  local e = {}
  local kv = entry[2]
  for i = 1, #kv, 2 do e[kv[i]] = kv[i + 1] end
  if e.g then e.gk = cjson.decode(e.g) end
  return e
end

-- Enqueue one delivery of an event to a group (an ordinary job of kind "event");
-- gk: the event's group keys (decoded JSON) or nil; they override its key per group.
local function deliver(topic, group, spec, id, payload, enq, key, gk, suffix)
  if gk and gk[group] then key = gk[group] end
  local queue = group .. '@' .. topic
  -- a nil (no key, no dedupe key) makes cmsgpack write a map {1: .., 2: ..}: Python reads both
  local m = cmsgpack.pack({topic, 'event', 0, key, 1, nil, spec.a, spec.r, spec.rt, spec.dt, enq,
    enq, enq, queue})
  admit(id .. ':' .. group .. suffix, queue, topic, enq, 0, enq, key, 1, nil, nil, m, payload,
    false)
end
