-- list_jobs.lua: one queue's jobs, newest first, filtered by state and task name.
-- Flags: no-writes (it reads)
-- KEYS[1]  the queue's `all` key
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] queue  ARGV[4] seq to scan below ('' newest)
-- ARGV[5] how many matches to return  ARGV[6] state or ''  ARGV[7] name or ''
-- ARGV[8] how many jobs to scan at most in this call
-- Touches: Q all, the job hashes (read only).
-- Returns {seq the scan stopped at or '' when it reached the end, record...}
-- (records as the values of RECORD in lib.lua, then the job id).
local q, top, want = ARGV[3], ARGV[4], tonumber(ARGV[5])
local state, name, budget = ARGV[6], ARGV[7], tonumber(ARGV[8])
local qb, jb = bases(q)
local out = {''}
local max = top == '' and '+inf' or ('(' .. top)
local scanned = 0
while scanned < budget and #out - 1 < want do
  local ids = redis.call('ZREVRANGEBYSCORE', qb .. 'all', max, '-inf', 'WITHSCORES', 'LIMIT', 0, 100)
  if #ids == 0 then return out end
  for i = 1, #ids, 2 do
    local rec = record(jb .. 'j:' .. ids[i])
    scanned = scanned + 1
    out[1] = ids[i + 1]
    if rec and (state == '' or rec[2] == state)
        and (name == '' or meta(rec[1])[1] == name) then
      rec[17] = ids[i]
      out[#out + 1] = rec
      if #out - 1 >= want then return out end
    end
  end
  if #ids < 200 then
    out[1] = ''
    return out
  end
  max = '(' .. ids[#ids]
end
return out
