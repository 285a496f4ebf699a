-- timings.lua: one queue's succeeded and dead jobs finished since an instant, newest first.
-- KEYS[1]  the queue's `done` key
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] queue  ARGV[4] since  ARGV[5] limit
-- Touches: Q done, the job hashes (read only).
-- Returns a flat list: name, state, enqueued_at, due_at, started_at, finished_at per job.
local qb, jb = bases(ARGV[3])
local out = {}
local ids = redis.call('ZREVRANGEBYSCORE', qb .. 'done', '+inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(ids) do
  local v = redis.call('HMGET', jb .. 'j:' .. id, 'n', 's', 'e', 'du', 'st', 'f')
  if v[1] and v[5] and v[6] then
    for j = 1, 6 do out[#out + 1] = v[j] end
  end
end
return out
