-- timings.lua: one queue's succeeded and dead jobs finished since an instant, newest first.
-- Flags: no-writes (it reads)
-- KEYS[1]  the queue's `done` key
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] queue  ARGV[4] since  ARGV[5] limit
-- Touches: Q done, the job hashes (read only).
-- Returns a flat list: name, state, enqueued_at, due_at, started_at, finished_at per job.
local qb, jb = bases(ARGV[3])
local out = {}
local ids = redis.call('ZREVRANGEBYSCORE', qb .. 'done', '+inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(ids) do
  local v = redis.call('HMGET', jb .. 'j:' .. id, 'm', 's', 'st', 'f')
  if v[1] and v[3] and v[4] then
    local M = meta(v[1])
    local k = #out
    out[k + 1], out[k + 2] = M[1], v[2]
    out[k + 3], out[k + 4] = string.format('%.17g', M[11]), string.format('%.17g', M[13])
    out[k + 5], out[k + 6] = v[3], v[4]
  end
end
return out
