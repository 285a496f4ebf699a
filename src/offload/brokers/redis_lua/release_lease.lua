-- release_lease.lua: give a named lease up if `owner` holds it.
-- Flags: allow-oom (it frees memory)
-- KEYS[1]  P:lease:<name>
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] owner
-- Returns 1 if released, else 0.
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1])
return 1
