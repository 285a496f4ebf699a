-- jobs.lua: read job records by id alone, through the id index.
-- Flags: allow-oom (it reads; the watch mark is one small field)
-- KEYS[1]  P:id:<first id> (routing)
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] '1' to watch: mark unfinished jobs so that
-- finishing them pushes to their notice list P:{t}:n:<id> (wait_job blocks on it)
-- ARGV[4..] job ids
-- Touches: P:id:<id>, the job hashes.
-- Returns per id: nil (unknown) or the values of RECORD (lib.lua).
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local q = redis.call('GET', P .. ':id:' .. id)
  local rec = false
  if q then
    local _, jb = bases(q)
    rec = record(jb .. 'j:' .. id)
    if rec and ARGV[3] == '1' and not FINAL_CODE[rec[2]] then
      redis.call('HSET', jb .. 'j:' .. id, 'wt', 1)
    end
  end
  out[i - 3] = rec
end
return out
