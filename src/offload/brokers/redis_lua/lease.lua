-- lease.lua: take or renew a named lease; refused while another owner holds it.
-- KEYS[1]  P:lease:<name>  HASH o (owner), x (expires_at by the broker's clock)
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] owner  ARGV[4] ttl_s
-- Returns 1 if the owner holds the lease now, else 0.
local k, owner, ttl = KEYS[1], ARGV[3], tonumber(ARGV[4])
local v = redis.call('HMGET', k, 'o', 'x')
if v[1] and v[1] ~= owner and tonumber(v[2]) > NOW then return 0 end
redis.call('HSET', k, 'o', owner, 'x', NOW + ttl)
redis.call('EXPIRE', k, math.ceil(ttl) + SAFETY_S)
return 1
