-- progress.lua: record a running job's progress, fenced like a settlement.
-- KEYS[1]  the job's hash
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] lease token  ARGV[4] value  ARGV[5] message or ''
-- ARGV[6] '1' if there is a message
-- Returns 1 if recorded, 0 if the lease is gone.
local jk = KEYS[1]
local v = redis.call('HMGET', jk, 's', 't', 'le')
if not (v[1] == 'running' and v[2] == ARGV[3] and tonumber(v[3]) > NOW) then return 0 end
redis.call('HSET', jk, 'pg', ARGV[4])
if ARGV[6] == '1' then
  redis.call('HSET', jk, 'pm', ARGV[5])
else
  redis.call('HDEL', jk, 'pm')
end
return 1
