-- ensure_topic.lua: create or update a topic and its groups. A new group with
-- from_start gets a delivery of every retained event.
-- KEYS[1]  the topic's `meta` key
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] topic  ARGV[4] retention_s or ''
-- ARGV[5] max_events or ''  ARGV[6..] pairs of group name, group spec JSON
-- Touches: TB meta, log, groups, gc; the group queues' keys (same hash tag); P:id:<id>.
local topic = ARGV[3]
local tb = topic_base(topic)
redis.call('HSET', tb .. 'meta', 'ret', ARGV[4], 'max', ARGV[5])
for i = 6, #ARGV, 2 do
  local group, spec = ARGV[i], cjson.decode(ARGV[i + 1])
  redis.call('HSET', tb .. 'groups', group, ARGV[i + 1])
  if redis.call('HSETNX', tb .. 'gc', group, NOW) == 1 and spec.fs == 1 then
    for _, entry in ipairs(redis.call('XRANGE', tb .. 'log', '-', '+')) do
      local e = event_of(entry)
      deliver(topic, group, spec, e.i, e.p, NOW, e.k, e.gk, ':s')
    end
  end
end
flush()
return 1
