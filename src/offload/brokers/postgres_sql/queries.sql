-- The statements the Python side runs, one per broker operation, each a single round
-- trip. Blocks start with "-- name: <name>"; the lines after it say what it does, which
-- tables it touches and its positional arguments (%b, in order; sent in binary).
-- Every instant is passed in from the broker's clock; none comes from the server.

-- name: enqueue
-- Store a batch of jobs ({schema}.enqueue; tables jobs, job_keys, queues, stats).
-- Args: 16 arrays (one element per request), now.
SELECT status, job_id, depth FROM {schema}.enqueue(
    %b::text[], %b::text[], %b::text[], %b::text[], %b::bytea[], %b::float8[], %b::int[],
    %b::float8[], %b::text[], %b::int[], %b::text[], %b::int[], %b::int[], %b::int[],
    %b::float8[], %b::float8[], %b::float8)

-- name: claim
-- Claim due jobs ({schema}.claim; tables jobs, stats).
-- Args: queues, worker_id, limit, lease_s, now.
SELECT * FROM {schema}.claim(%b::text[], %b::text, %b::int, %b::float8, %b::float8)

-- name: next_due
-- The earliest run_at among delayed jobs of these queues (tables: jobs). Args: queues.
SELECT {schema}.next_due(%b::text[])

-- name: extend
-- Renew leases still held (fenced like a settlement); report cancel requests.
-- Tables: jobs. Args (named): now, lease_s, ids, tokens.
-- The fence is kept out of reach of the partial indexes (see settle): jobs are found by id.
UPDATE {schema}.jobs j SET lease_expires = %(now)b::float8 + %(lease_s)b::float8
  FROM unnest(%(ids)b::text[], %(tokens)b::bigint[]) AS u(id, token)
 WHERE j.id = ANY (%(ids)b::text[]) AND j.id = u.id
   AND (j.state = 'running' AND j.lease_token = u.token
        AND j.lease_expires > %(now)b::float8) IS TRUE
RETURNING j.id, j.lease_token, j.cancel_requested, j.lease_expires

-- name: settle
-- Record outcomes ({schema}.settle; tables jobs, job_keys, stats).
-- Args: ids, tokens, kinds, results, errors, delays, now.
SELECT {schema}.settle(
    %b::text[], %b::bigint[], %b::text[], %b::bytea[], %b::jsonb[], %b::float8[], %b::float8)

-- name: settle_follow_ups
-- Record outcomes and enqueue follow-ups ({schema}.settle; tables jobs, job_keys, stats).
-- Args: as settle, then the follow-ups: parents and the 15 request arrays of enqueue
-- (without max_depths).
SELECT {schema}.settle(
    %b::text[], %b::bigint[], %b::text[], %b::bytea[], %b::jsonb[], %b::float8[], %b::float8,
    %b::int[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bytea[], %b::float8[],
    %b::int[], %b::float8[], %b::text[], %b::int[], %b::text[], %b::int[], %b::int[],
    %b::float8[], %b::float8[])

-- name: set_progress
-- Record a running job's progress, fenced. Tables: jobs.
-- Args: value, message, id, token, now.
UPDATE {schema}.jobs j SET progress = %b::float8, progress_message = %b::text
 WHERE j.id = %b::text AND j.state = 'running' AND j.lease_token = %b::bigint
   AND j.lease_expires > %b::float8
RETURNING j.id

-- name: recover_expired
-- Tables: jobs, job_keys, stats. Args: limit, now.
SELECT {schema}.recover_expired(%b::int, %b::float8)

-- name: prune
-- Tables: jobs, events, topics, kv, workers, named_leases, buckets. Args: limit, now.
SELECT {schema}.prune(%b::int, %b::float8)

-- name: vacuum_due
-- Tables to VACUUM by hand (autovacuum off, dead rows piled up). Args: min_dead.
SELECT {schema}.vacuum_due(%b::bigint)

-- name: cancel
-- Tables: jobs, job_keys, stats. Args: ids, now.
SELECT state FROM {schema}.cancel(%b::text[], %b::float8)

-- name: get_jobs
-- Full records of these jobs (tables: jobs). Args: ids.
SELECT id, queue, name, kind, state, payload, priority, key, dedupe_key, attempts,
       max_attempts, recoveries, enqueued_at, run_at, started_at, finished_at, result,
       errors::text, progress, progress_message, cancel_requested, worker_id, lease_expires,
       seq
  FROM {schema}.jobs WHERE id = ANY (%b::text[])

-- name: list_jobs
-- Jobs matching the optional filters, newest first, one more than asked (to know if
-- there is a next page). Tables: jobs. Args: queue, state, name, before_seq, limit.
SELECT id, queue, name, kind, state, payload, priority, key, dedupe_key, attempts,
       max_attempts, recoveries, enqueued_at, run_at, started_at, finished_at, result,
       errors::text, progress, progress_message, cancel_requested, worker_id, lease_expires,
       seq
  FROM {schema}.jobs
 WHERE (%(queue)b::text IS NULL OR queue = %(queue)b::text)
   AND (%(state)b::text IS NULL OR state = %(state)b::text)
   AND (%(name)b::text IS NULL OR name = %(name)b::text)
   AND (%(before)b::bigint IS NULL OR seq < %(before)b::bigint)
 ORDER BY seq DESC
 LIMIT %(limit)b::int

-- name: timings
-- Finished (succeeded or dead) jobs of a queue since an instant, newest first.
-- Tables: jobs. Args: queue, since, limit.
SELECT name, state, enqueued_at, due_at, started_at, finished_at
  FROM {schema}.jobs
 WHERE queue = %b::text AND state IN ('succeeded', 'dead')
   AND finished_at >= %b::float8 AND started_at IS NOT NULL
 ORDER BY finished_at DESC
 LIMIT %b::int

-- name: requeue
-- Tables: jobs, job_keys, stats. Args: ids, now.
SELECT {schema}.requeue(%b::text[], %b::float8)

-- name: delete_jobs
-- Tables: jobs, job_keys, stats. Args: ids, now.
SELECT {schema}.delete_jobs(%b::text[], %b::float8)

-- name: purge
-- Delete a queue's jobs in these states (never running ones). Tables: jobs, job_keys,
-- stats. Args: queue, states, now.
SELECT {schema}.delete_jobs(
    ARRAY(SELECT j.id FROM {schema}.jobs j
           WHERE j.queue = %b::text AND j.state = ANY (%b::text[]) AND j.state <> 'running'),
    %b::float8)

-- name: queues
-- Every queue that holds or held jobs (tables: stats).
SELECT DISTINCT queue FROM {schema}.stats ORDER BY queue

-- name: stats
-- Counts and counters per (queue, task name), plus one row per queue (name NULL) with
-- the enqueue time of its oldest pending job. NULL queues: every known queue.
-- Tables: stats, jobs. Args: queues.
WITH qs AS (
    SELECT coalesce(%b::text[], ARRAY(SELECT DISTINCT s.queue FROM {schema}.stats s)) AS a
)
SELECT s.queue, s.name,
       sum(s.n_scheduled)::bigint, sum(s.n_queued)::bigint, sum(s.n_blocked)::bigint,
       sum(s.n_running)::bigint, sum(s.n_retrying)::bigint, sum(s.n_succeeded)::bigint,
       sum(s.n_dead)::bigint, sum(s.n_cancelled)::bigint,
       sum(s.enqueued)::bigint, sum(s.started)::bigint, sum(s.waited)::bigint,
       sum(s.succeeded)::bigint, sum(s.dead)::bigint, sum(s.cancelled)::bigint,
       sum(s.retried)::bigint, sum(s.recovered)::bigint, sum(s.wait_s), sum(s.service_s),
       sum(s.system_s), sum(s.in_system)::bigint, sum(s.in_system_enq_s), NULL::float8
  FROM {schema}.stats s, qs
 WHERE s.queue = ANY (qs.a)
 GROUP BY s.queue, s.name
UNION ALL
SELECT q.queue, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
       (SELECT min(j.enqueued_at) FROM {schema}.jobs j
         WHERE j.queue = q.queue
           AND j.state IN ('scheduled', 'queued', 'blocked', 'retrying'))
  FROM qs, unnest(qs.a) AS q(queue)

-- name: publish
-- Tables: topics, events, topic_groups, jobs. Args: topic, ids, payloads, keys,
-- group_keys (JSON objects or NULL), published_ats, now.
SELECT {schema}.publish(
    %b::text, %b::text[], %b::bytea[], %b::text[], %b::jsonb[], %b::float8[], %b::float8)

-- name: await_results
-- Say that results of this queue are awaited until an instant, so jobs ending there
-- notify. Tables: result_waits. Args: queue, until.
INSERT INTO {schema}.result_waits AS r (queue, until) VALUES (%b::text, %b::float8)
ON CONFLICT (queue) DO UPDATE SET until = greatest(r.until, excluded.until)

-- name: ensure_topic
-- Tables: topics, topic_groups, events, jobs. Args: topic, retention_s, max_events,
-- groups, from_starts, max_attempts, max_recoveries, result_ttls, dead_ttls, now.
SELECT {schema}.ensure_topic(
    %b::text, %b::float8, %b::bigint, %b::text[], %b::boolean[], %b::int[], %b::int[],
    %b::float8[], %b::float8[], %b::float8)

-- name: replay
-- Tables: topics, topic_groups, events, jobs. Args: topic, group, from_offset, from_time,
-- now.
SELECT {schema}.replay(%b::text, %b::text, %b::bigint, %b::float8, %b::float8)

-- name: topics
-- Every topic with its retained range and its groups (tables: topics, events,
-- topic_groups).
SELECT t.name, t.retention_s, t.max_events, e.first, e.last, e.retained,
       coalesce(g.grps, '{}'), coalesce(g.created, '{}'), coalesce(g.from_start, '{}')
  FROM {schema}.topics t
  LEFT JOIN LATERAL (
    SELECT min(x."offset") AS first, max(x."offset") AS last, count(*) AS retained
      FROM {schema}.events x WHERE x.topic = t.name) e ON true
  LEFT JOIN LATERAL (
    SELECT array_agg(y.grp ORDER BY y.created_at, y.grp) AS grps,
           array_agg(y.created_at ORDER BY y.created_at, y.grp) AS created,
           array_agg(y.from_start ORDER BY y.created_at, y.grp) AS from_start
      FROM {schema}.topic_groups y WHERE y.topic = t.name) g ON true
 ORDER BY t.name

-- name: acquire_lease
-- Take or renew a named lease: free, expired or already ours. Tables: named_leases.
-- Args: name, owner, expires_at, now.
INSERT INTO {schema}.named_leases AS l (name, owner, expires_at)
VALUES (%b::text, %b::text, %b::float8)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
 WHERE l.owner = excluded.owner OR l.expires_at <= %b::float8
RETURNING l.name

-- name: release_lease
-- Tables: named_leases. Args: name, owner.
DELETE FROM {schema}.named_leases WHERE name = %b::text AND owner = %b::text RETURNING name

-- name: take_tokens
-- Tables: buckets. Args: bucket, rate, burst, n, now.
SELECT {schema}.take_tokens(%b::text, %b::float8, %b::float8, %b::float8, %b::float8)

-- name: kv_get
-- Tables: kv. Args: key, now.
SELECT value FROM {schema}.kv
 WHERE key = %b::text AND (expires_at IS NULL OR expires_at > %b::float8)

-- name: kv_set
-- Tables: kv. Args: key, value, expires_at (NULL: never).
INSERT INTO {schema}.kv (key, value, expires_at) VALUES (%b::text, %b::bytea, %b::float8)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at

-- name: register_worker
-- Tables: workers. Args: id, info (JSON of WorkerInfo), last_seen, expires_at.
INSERT INTO {schema}.workers (id, info, last_seen, expires_at)
VALUES (%b::text, %b::bytea, %b::float8, %b::float8)
ON CONFLICT (id) DO UPDATE SET
    info = excluded.info, last_seen = excluded.last_seen, expires_at = excluded.expires_at

-- name: unregister_worker
-- Tables: workers. Args: id.
DELETE FROM {schema}.workers WHERE id = %b::text

-- name: workers
-- Workers seen within their TTL. Tables: workers. Args: now.
SELECT info, last_seen FROM {schema}.workers WHERE expires_at > %b::float8 ORDER BY id
