-- replay.lua: deliver again to one group every retained event from an offset or a time.
-- KEYS[1]  the topic's `meta` key
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] topic  ARGV[4] group
-- ARGV[5] from offset or ''  ARGV[6] from published_at or ''
-- Touches: TB meta, log, groups; the group's queue keys (same hash tag); P:id:<id>.
-- Returns the number of events delivered.
local topic, group = ARGV[3], ARGV[4]
local tb = topic_base(topic)
local raw = redis.call('HGET', tb .. 'groups', group)
if not raw then return 0 end
local spec = cjson.decode(raw)
local suffix = ':r' .. redis.call('HINCRBY', tb .. 'meta', 'replays', 1)
local start = ARGV[5] == '' and '-' or (ARGV[5] .. '-0')
local since = ARGV[6] ~= '' and tonumber(ARGV[6]) or nil
local n = 0
for _, entry in ipairs(redis.call('XRANGE', tb .. 'log', start, '+')) do
  local e = event_of(entry)
  if not since or tonumber(e.a) >= since then
    deliver(topic, group, spec, e.i, e.p, NOW, e.k, e.gk, suffix)
    n = n + 1
  end
end
flush()
return n
