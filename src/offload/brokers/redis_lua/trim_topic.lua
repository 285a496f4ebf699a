-- trim_topic.lua: drop events beyond the topic's max_events, then those older than its
-- retention (by the broker's clock).
-- Flags: allow-oom (it frees memory)
-- KEYS[1]  the topic's `log` key
-- ARGV[1] prefix  ARGV[2] now  ARGV[3] topic
-- Touches: TB meta (read), TB log.
-- Returns the number of events dropped.
local tb = topic_base(ARGV[3])
local v = redis.call('HMGET', tb .. 'meta', 'ret', 'max')
local n = 0
local max = tonumber(v[2] or '')
if max then
  local len = redis.call('XLEN', tb .. 'log')
  if len > max then n = n + redis.call('XTRIM', tb .. 'log', 'MAXLEN', max) end
end
local ret = tonumber(v[1] or '')
if ret then
  local cutoff = NOW - ret
  while true do
    local entries = redis.call('XRANGE', tb .. 'log', '-', '+', 'COUNT', 100)
    if #entries == 0 then break end
    local last = nil
    for _, entry in ipairs(entries) do
      if tonumber(event_of(entry).a) >= cutoff then break end
      last = entry[1]
    end
    if not last then break end
    n = n + redis.call('XTRIM', tb .. 'log', 'MINID', string.match(last, '^(%d+)') .. '-2')
  end
end
return n
