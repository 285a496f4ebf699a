-- enqueue.lua: store a batch of jobs, each request atomic on its own (EnqueueOutcome).
-- KEYS[1]  the first request's queue `ready` key (routes the call to its slot)
-- ARGV[1]  prefix   ARGV[2] now   ARGV[3] msgpack sequence of request tuples' values,
--          12 per request (see admit)
-- ARGV[4..] each job's m and payload, referenced by index from its tuple
-- Touches: the queues' keys (one hash tag per call), P:id:<id> (the id index).
-- Returns a flat list: status, job id, depth for each request.
local out, n, rows, pos = {}, 0, ARGV[3], 0
while pos >= 0 and pos < #rows do
  local id, q, name, enq, prio, run_at, key, kl, dk, max_depth, mi, pi
  pos, id, q, name, enq, prio, run_at, key, kl, dk, max_depth, mi, pi =
    cmsgpack.unpack_limit(rows, 12, pos)
  local status, job, depth = admit(id, q, name, enq, prio, run_at, key, kl, dk, max_depth,
    ARGV[mi], ARGV[pi], true)
  out[n + 1], out[n + 2], out[n + 3] = status, job, depth
  n = n + 3
end
flush()
return out
