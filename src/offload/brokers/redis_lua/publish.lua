-- publish.lua: append events to a topic's log and, in the same step, enqueue one
-- delivery per event for every group of the topic (in the group's queue).
-- KEYS[1]  the topic's `meta` key
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] topic  ARGV[4] hard cap on the log's length
-- ARGV[5] default retention_s for a new topic
-- ARGV[6] msgpack list of {event id, published_at, key or nil, group keys JSON or nil}
-- ARGV[7..] payloads
-- Touches: TB meta, log, groups; the group queues' keys (same hash tag); P:id:<id>.
-- Returns the offsets given to the events.
local topic, cap = ARGV[3], ARGV[4]
local tb = topic_base(topic)
redis.call('HSETNX', tb .. 'meta', 'ret', ARGV[5])
local groups = {}
local flat = redis.call('HGETALL', tb .. 'groups')
for i = 1, #flat, 2 do groups[#groups + 1] = {flat[i], cjson.decode(flat[i + 1])} end
local nxt = tonumber(redis.call('HGET', tb .. 'meta', 'next') or '0')
local out = {}
for i, e in ipairs(cmsgpack.unpack(ARGV[6])) do
  local payload = ARGV[6 + i]
  local off = nxt
  nxt = nxt + 1
  local fields = {'i', e[1], 'p', payload, 'a', e[2]}
  if e[3] then fields[7] = 'k'; fields[8] = e[3] end
  local gk = nil
  if e[4] then
    fields[#fields + 1] = 'g'
    fields[#fields + 1] = e[4]
    gk = cjson.decode(e[4])
  end
  redis.call('XADD', tb .. 'log', 'MAXLEN', '~', cap, off .. '-1', unpack(fields))
  for _, g in ipairs(groups) do deliver(topic, g[1], g[2], e[1], payload, e[2], e[3], gk, '') end
  out[i] = off
end
redis.call('HSET', tb .. 'meta', 'next', nxt)
flush()
return out
