-- enqueue.lua: store a batch of jobs, each request atomic on its own (EnqueueOutcome).
-- KEYS[1]  the first request's queue `ready` key (routes the call to its slot)
-- ARGV[1]  prefix   ARGV[2] now   ARGV[3] msgpack list of request tuples (see admit)
-- ARGV[4..] each job's m and payload, referenced by index from its tuple
-- Touches: the queues' keys (one hash tag per call), P:id:<id> (the id index).
-- Returns a flat list: status, job id, depth for each request.
local out = {}
for _, r in ipairs(cmsgpack.unpack(ARGV[3])) do
  local status, id, depth = admit(r, ARGV[r[11]], ARGV[r[12]], true)
  out[#out + 1] = status
  out[#out + 1] = id
  out[#out + 1] = depth
end
flush()
return out
