-- The SQLite broker's statements. Each section starts with "-- name: <name>"; the loader
-- (offload.brokers._sqlite_db.load_queries) keys them by that name.
--
-- Tables touched: jobs, stats, topics, topic_groups, events, named_leases, buckets, kv,
-- workers (see migrations/0001_initial.sql).
--
-- Every statement runs inside one BEGIN IMMEDIATE transaction per broker call, so a batch
-- (enqueue of N, claim of N, settle of N) is atomic and takes the write lock once.
-- Instants (?now) are Unix seconds from the broker's clock, never SQLite's.
-- Parameters are numbered (?1, ?2, ...) and listed above each statement.


-- ======================================================================= enqueue

-- name: existing_ids
-- Ids of the batch that already exist. ?1 JSON array of [id_hash, id] pairs.
SELECT j.id FROM json_each(?1) AS e
JOIN jobs AS j ON j.id_hash = e.value ->> 0 AND j.id = e.value ->> 1;

-- name: dedupe_holder
-- The unfinished job holding a dedupe key. ?1 queue, ?2 dedupe key.
SELECT id FROM jobs INDEXED BY jobs_dedupe
WHERE queue = ?1 AND dedupe_key = ?2
  AND dedupe_key IS NOT NULL
  AND (state = 'scheduled' OR state = 'queued' OR state = 'blocked'
       OR state = 'running' OR state = 'retrying');

-- name: queue_pending
-- A queue's pending jobs (what max_depth bounds), from the stats table. ?1 queue.
SELECT coalesce(sum(n_scheduled + n_queued + n_blocked + n_retrying), 0)
FROM stats WHERE queue = ?1;

-- name: key_slots
-- For one key of one queue: slots in use (unfinished, not blocked) and jobs blocked.
-- ?1 queue, ?2 key.
SELECT coalesce(sum(state <> 'blocked'), 0), coalesce(sum(state = 'blocked'), 0)
FROM jobs
WHERE queue = ?1 AND key = ?2
  AND state IN ('scheduled', 'queued', 'blocked', 'running', 'retrying');

-- name: insert_job
-- ?1 id, ?2 queue, ?3 state, ?4 priority, ?5 run_at, ?6 name, ?7 kind, ?8 enqueued_at,
-- ?9 due_at, ?10 key, ?11 key_limit, ?12 dedupe_key, ?13 max_attempts, ?14 max_recoveries,
-- ?15 result_ttl_s, ?16 dead_ttl_s, ?17 payload, ?18 id_hash.
-- Micro-optimization: Python 3.11's sqlite3 binds None and bytes slowly (through its
-- adapter registry), so a missing key is passed as 0 and read back as NULL by nullif (keys
-- are text, never 0), and the payload comes as a bytearray.
INSERT INTO jobs (
    id, queue, state, priority, run_at, name, kind, enqueued_at, due_at, key, key_limit,
    dedupe_key, max_attempts, max_recoveries, result_ttl_s, dead_ttl_s, payload, id_hash
) VALUES (
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, nullif(?10, 0), ?11, nullif(?12, 0), ?13, ?14, ?15,
    ?16, ?17, ?18
);

-- name: upsert_stats
-- Add deltas to one (queue, task) row of stats. ?1 queue, ?2 name, ?3..?23 the deltas in
-- column order (n_scheduled .. n_cancelled, enqueued .. in_system_enq_s).
INSERT INTO stats (
    queue, name,
    n_scheduled, n_queued, n_blocked, n_running, n_retrying, n_succeeded, n_dead, n_cancelled,
    enqueued, started, waited, succeeded, dead, cancelled, retried, recovered,
    wait_s, service_s, system_s, in_system, in_system_enq_s
) VALUES (
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
    ?20, ?21, ?22, ?23
)
ON CONFLICT (queue, name) DO UPDATE SET
    n_scheduled = n_scheduled + excluded.n_scheduled,
    n_queued = n_queued + excluded.n_queued,
    n_blocked = n_blocked + excluded.n_blocked,
    n_running = n_running + excluded.n_running,
    n_retrying = n_retrying + excluded.n_retrying,
    n_succeeded = n_succeeded + excluded.n_succeeded,
    n_dead = n_dead + excluded.n_dead,
    n_cancelled = n_cancelled + excluded.n_cancelled,
    enqueued = enqueued + excluded.enqueued,
    started = started + excluded.started,
    waited = waited + excluded.waited,
    succeeded = succeeded + excluded.succeeded,
    dead = dead + excluded.dead,
    cancelled = cancelled + excluded.cancelled,
    retried = retried + excluded.retried,
    recovered = recovered + excluded.recovered,
    wait_s = wait_s + excluded.wait_s,
    service_s = service_s + excluded.service_s,
    system_s = system_s + excluded.system_s,
    in_system = in_system + excluded.in_system,
    in_system_enq_s = in_system_enq_s + excluded.in_system_enq_s;


-- ======================================================================= claim

-- name: queue_has_work
-- Read-only probe before taking the write lock. ?1 queue.
SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_ready WHERE queue = ?1 AND state = 'queued');

-- name: any_due
-- Read-only probe: is a delayed job due? ?1 now.
SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_scheduled
               WHERE state = 'scheduled' AND run_at <= ?1)
    OR EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_retrying
               WHERE state = 'retrying' AND run_at <= ?1);

-- name: next_due
-- When the next delayed job falls due (NULL for none of that state).
SELECT (SELECT min(run_at) FROM jobs INDEXED BY jobs_scheduled WHERE state = 'scheduled'),
       (SELECT min(run_at) FROM jobs INDEXED BY jobs_retrying WHERE state = 'retrying');

-- name: promote_scheduled
-- Due scheduled jobs become queued, oldest due first. ?1 now, ?2 at most this many.
UPDATE jobs SET state = 'queued'
WHERE seq IN (
    SELECT seq FROM jobs INDEXED BY jobs_scheduled
    WHERE state = 'scheduled' AND run_at <= ?1 ORDER BY run_at LIMIT ?2
)
RETURNING queue, name;

-- name: promote_retrying
-- Due retrying jobs become queued. ?1 now, ?2 at most this many.
UPDATE jobs SET state = 'queued'
WHERE seq IN (
    SELECT seq FROM jobs INDEXED BY jobs_retrying
    WHERE state = 'retrying' AND run_at <= ?1 ORDER BY run_at LIMIT ?2
)
RETURNING queue, name;

-- name: claim
-- Take up to ?5 queued jobs of queue ?1 in claim order (priority, due time, arrival) and
-- start them. ?2 now, ?3 lease expiry, ?4 worker id.
-- The lease token is (seq << 20) | (claims & 0xFFFFF): settlements find the row by its
-- rowid (token >> 20) without an index, and every claim of a job gets a new token since
-- claims only grows. Fenced statements also compare the id, so a rowid reused after a
-- delete can never match a stale token.
-- RETURNING order is not guaranteed: the caller sorts by (-priority, run_at, seq).
UPDATE jobs SET
    state = 'running',
    attempts = attempts + 1,
    claims = claims + 1,
    lease_token = (seq << 20) | ((claims + 1) & 1048575),
    lease_expires = ?3,
    started_at = ?2,
    worker_id = ?4
WHERE seq IN (
    SELECT seq FROM jobs INDEXED BY jobs_ready
    WHERE queue = ?1 AND state = 'queued'
    ORDER BY priority DESC, run_at, seq
    LIMIT ?5
)
RETURNING seq, id, name, kind, payload, attempts, max_attempts, recoveries, lease_token,
          enqueued_at, priority, key, run_at, claims - claims_base, due_at;


-- ======================================================================= leases and settlement
-- Fencing: a statement changes a job only while it is running under the caller's lease
-- token and the lease has not expired (lease_expires > now). The job is found by its
-- rowid, taken from the token (seq = token >> 20), and its id must match too.

-- name: extend
-- ?1 id, ?2 token, ?3 now, ?4 new expiry. ?5 seq (token >> 20).
UPDATE jobs SET lease_expires = ?4
WHERE seq = ?5 AND id = ?1
  AND state = 'running' AND lease_token = ?2 AND lease_expires > ?3
RETURNING cancel_requested;

-- name: set_progress
-- ?1 id, ?2 token, ?3 now, ?4 progress, ?5 message. ?6 seq (token >> 20).
UPDATE jobs SET progress = ?4, progress_message = ?5
WHERE seq = ?6 AND id = ?1
  AND state = 'running' AND lease_token = ?2 AND lease_expires > ?3;

-- name: ack
-- Succeeded, with its result. ?1 id, ?2 token, ?3 now, ?4 result (0 for none, as in
-- insert_job), ?5 seq (token >> 20).
UPDATE jobs SET
    state = 'succeeded', result = nullif(?4, 0), finished_at = ?3, expires_at = ?3 + result_ttl_s,
    lease_token = NULL, lease_expires = NULL
WHERE seq = ?5 AND id = ?1
  AND state = 'running' AND lease_token = ?2 AND lease_expires > ?3
RETURNING queue, name, key, enqueued_at, started_at;

-- name: ack_batch
-- Ack every job of a batch whose lease still holds, in one statement (the fencing of
-- "ack", row by row). The caller splices a VALUES list of (seq, id, token, result) rows
-- in place of "(?batch)" and binds ?1 now, then the rows (a result of 0 means none, as
-- in insert_job). RETURNING the jobs settled.
UPDATE jobs SET
    state = 'succeeded', result = nullif(b.column4, 0), finished_at = ?1, expires_at = ?1 + result_ttl_s,
    lease_token = NULL, lease_expires = NULL
FROM (VALUES (?batch)) AS b
WHERE jobs.seq = b.column1 AND jobs.id = b.column2
  AND jobs.state = 'running' AND jobs.lease_token = b.column3 AND jobs.lease_expires > ?1
RETURNING jobs.id, jobs.queue, jobs.name, jobs.key, jobs.enqueued_at, jobs.started_at;

-- name: retry
-- Failed attempt, to run again at ?4. ?1 id, ?2 token, ?3 now, ?5 error (JSON object),
-- ?6 seq (token >> 20).
UPDATE jobs SET
    state = 'retrying', run_at = ?4,
    errors = json_insert(coalesce(errors, '[]'), '$[#]', json(?5)),
    lease_token = NULL, lease_expires = NULL
WHERE seq = ?6 AND id = ?1
  AND state = 'running' AND lease_token = ?2 AND lease_expires > ?3
RETURNING queue, name, key, enqueued_at, started_at;

-- name: finish_running
-- Dead (?4 = 'dead') or cancelled (?4 = 'cancelled'), with an optional error ?5 (JSON
-- object or NULL). ?1 id, ?2 token, ?3 now, ?6 seq (token >> 20).
UPDATE jobs SET
    state = ?4, finished_at = ?3,
    expires_at = ?3 + CASE WHEN ?4 = 'dead' THEN dead_ttl_s ELSE result_ttl_s END,
    errors = CASE WHEN ?5 IS NULL THEN errors
                  ELSE json_insert(coalesce(errors, '[]'), '$[#]', json(?5)) END,
    lease_token = NULL, lease_expires = NULL
WHERE seq = ?6 AND id = ?1
  AND state = 'running' AND lease_token = ?2 AND lease_expires > ?3
RETURNING queue, name, key, enqueued_at, started_at;

-- name: release
-- Given back unrun, due at ?4 (queued if due now, else scheduled), the attempt not counted.
-- ?1 id, ?2 token, ?3 now, ?5 seq (token >> 20).
UPDATE jobs SET
    state = CASE WHEN ?4 > ?3 THEN 'scheduled' ELSE 'queued' END, run_at = ?4,
    attempts = attempts - 1, lease_token = NULL, lease_expires = NULL
WHERE seq = ?5 AND id = ?1
  AND state = 'running' AND lease_token = ?2 AND lease_expires > ?3
RETURNING queue, name, key, enqueued_at, started_at;

-- name: key_active
-- Slots in use for one key. ?1 queue, ?2 key.
SELECT count(*) FROM jobs
WHERE queue = ?1 AND key = ?2 AND state IN ('scheduled', 'queued', 'running', 'retrying');

-- name: key_blocked_head
-- The oldest blocked jobs of one key. ?1 queue, ?2 key, ?3 at most this many.
SELECT seq, name, key_limit, run_at FROM jobs
WHERE queue = ?1 AND key = ?2 AND state = 'blocked'
ORDER BY seq LIMIT ?3;

-- name: set_state
-- ?1 seq, ?2 new state.
UPDATE jobs SET state = ?2 WHERE seq = ?1;


-- ======================================================================= maintenance

-- name: recover_expired
-- Running jobs whose lease expired go back to queued, or to dead once their recoveries
-- are used up, with a lease_expired error. ?1 now, ?2 error message, ?3 at most this many.
-- SET expressions read the old row, so every CASE sees the state before recovery.
UPDATE jobs SET
    state = CASE WHEN recoveries >= max_recoveries THEN 'dead' ELSE 'queued' END,
    recoveries = recoveries + (recoveries < max_recoveries),
    finished_at = CASE WHEN recoveries >= max_recoveries THEN ?1 END,
    expires_at = CASE WHEN recoveries >= max_recoveries THEN ?1 + dead_ttl_s END,
    errors = json_insert(coalesce(errors, '[]'), '$[#]', json_object(
        'reason', 'lease_expired', 'message', ?2, 'attempt', attempts, 'at', ?1,
        'worker_id', coalesce(worker_id, ''))),
    lease_token = NULL, lease_expires = NULL
WHERE seq IN (
    SELECT seq FROM jobs INDEXED BY jobs_leases
    WHERE state = 'running' AND lease_expires <= ?1
    ORDER BY lease_expires LIMIT ?3
)
RETURNING queue, name, state, key, enqueued_at;

-- name: prune_jobs
-- Final jobs past their TTL. ?1 now, ?2 at most this many.
DELETE FROM jobs
WHERE seq IN (
    SELECT seq FROM jobs INDEXED BY jobs_expiry
    WHERE expires_at IS NOT NULL AND expires_at <= ?1
    ORDER BY expires_at LIMIT ?2
)
RETURNING queue, name, state;

-- name: prune_kv
-- ?1 now.
DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?1;

-- name: prune_workers
-- ?1 now.
DELETE FROM workers WHERE expires_at <= ?1;

-- name: job_brief
-- ?1 id, ?2 id_hash.
SELECT seq, queue, name, state, key, enqueued_at, dedupe_key, key_limit FROM jobs
WHERE id_hash = ?2 AND id = ?1;

-- name: finish_pending
-- A job that is not running ends in state ?2 at ?3. ?1 seq.
UPDATE jobs SET
    state = ?2, finished_at = ?3,
    expires_at = ?3 + CASE WHEN ?2 = 'dead' THEN dead_ttl_s ELSE result_ttl_s END
WHERE seq = ?1;

-- name: request_cancel
-- ?1 seq.
UPDATE jobs SET cancel_requested = 1 WHERE seq = ?1;

-- name: delete_job
-- ?1 seq.
DELETE FROM jobs WHERE seq = ?1;

-- name: max_seq
SELECT coalesce(max(seq), 0) FROM jobs;

-- name: requeue_job
-- A dead or cancelled job starts over as new: ?2 new seq, ?3 state, ?4 now,
-- ?5 dedupe key (NULL if another unfinished job holds it now). Errors are kept. ?1 seq.
UPDATE jobs SET
    seq = ?2, state = ?3, attempts = 0, recoveries = 0, claims_base = claims,
    cancel_requested = 0,
    started_at = NULL, finished_at = NULL, expires_at = NULL, result = NULL,
    enqueued_at = ?4, run_at = ?4, due_at = ?4, dedupe_key = ?5
WHERE seq = ?1;


-- ======================================================================= results

-- name: get_jobs
-- Full records of the jobs in JSON array ?1 of [id_hash, id] pairs.
SELECT j.id, j.queue, j.name, j.kind, j.state, j.payload, j.priority, j.key, j.dedupe_key,
       j.attempts, j.max_attempts, j.recoveries, j.enqueued_at, j.run_at, j.started_at,
       j.finished_at, j.result, j.errors, j.progress, j.progress_message,
       j.cancel_requested, j.worker_id, j.lease_expires
FROM json_each(?1) AS e
JOIN jobs AS j ON j.id_hash = e.value ->> 0 AND j.id = e.value ->> 1;

-- name: list_jobs
-- A queue's jobs in any state, newest first. ?1 queue, ?2 unused (NULL), ?3 only seq
-- below this, ?4 task name or NULL for any, ?5 at most this many.
SELECT j.seq, j.id, j.queue, j.name, j.kind, j.state, j.payload, j.priority, j.key,
       j.dedupe_key, j.attempts, j.max_attempts, j.recoveries, j.enqueued_at, j.run_at,
       j.started_at, j.finished_at, j.result, j.errors, j.progress, j.progress_message,
       j.cancel_requested, j.worker_id, j.lease_expires
FROM jobs AS j INDEXED BY jobs_queue
WHERE j.queue = ?1 AND ?2 IS NULL AND j.seq < ?3 AND (?4 IS NULL OR j.name = ?4)
ORDER BY j.seq DESC LIMIT ?5;

-- name: list_jobs_walk
-- A queue's jobs in state ?2 by walking its jobs newest first: quick for the states of
-- recent jobs (queued, scheduled, retrying, succeeded). Parameters as list_jobs.
SELECT j.seq, j.id, j.queue, j.name, j.kind, j.state, j.payload, j.priority, j.key,
       j.dedupe_key, j.attempts, j.max_attempts, j.recoveries, j.enqueued_at, j.run_at,
       j.started_at, j.finished_at, j.result, j.errors, j.progress, j.progress_message,
       j.cancel_requested, j.worker_id, j.lease_expires
FROM jobs AS j INDEXED BY jobs_queue
WHERE j.queue = ?1 AND j.state = ?2 AND j.seq < ?3 AND (?4 IS NULL OR j.name = ?4)
ORDER BY j.seq DESC LIMIT ?5;

-- name: list_jobs_rare
-- A queue's dead, cancelled or blocked jobs (?2), from their own index.
SELECT j.seq, j.id, j.queue, j.name, j.kind, j.state, j.payload, j.priority, j.key,
       j.dedupe_key, j.attempts, j.max_attempts, j.recoveries, j.enqueued_at, j.run_at,
       j.started_at, j.finished_at, j.result, j.errors, j.progress, j.progress_message,
       j.cancel_requested, j.worker_id, j.lease_expires
FROM jobs AS j INDEXED BY jobs_rare
WHERE (j.state = 'dead' OR j.state = 'cancelled' OR j.state = 'blocked')
  AND j.queue = ?1 AND j.state = ?2 AND j.seq < ?3 AND (?4 IS NULL OR j.name = ?4)
ORDER BY j.seq DESC LIMIT ?5;

-- name: list_jobs_running
-- A queue's running jobs (?2 = 'running'), from the lease index (few rows, sorted here).
SELECT j.seq, j.id, j.queue, j.name, j.kind, j.state, j.payload, j.priority, j.key,
       j.dedupe_key, j.attempts, j.max_attempts, j.recoveries, j.enqueued_at, j.run_at,
       j.started_at, j.finished_at, j.result, j.errors, j.progress, j.progress_message,
       j.cancel_requested, j.worker_id, j.lease_expires
FROM jobs AS j INDEXED BY jobs_leases
WHERE j.state = 'running'
  AND j.queue = ?1 AND ?2 = 'running' AND j.seq < ?3 AND (?4 IS NULL OR j.name = ?4)
ORDER BY j.seq DESC LIMIT ?5;


-- ======================================================================= inspection

-- name: queues
SELECT DISTINCT queue FROM stats ORDER BY queue;

-- name: stats_of_queue
-- ?1 queue.
SELECT * FROM stats WHERE queue = ?1;

-- name: oldest_pending
-- When the queue's oldest pending job was enqueued: each pending state from its own
-- index (a walk over that state's jobs; stats are for dashboards, not the hot path).
-- ?1 queue.
SELECT min(e) FROM (
    SELECT (SELECT min(enqueued_at) FROM jobs INDEXED BY jobs_ready
            WHERE queue = ?1 AND state = 'queued') AS e
    UNION ALL
    SELECT (SELECT min(enqueued_at) FROM jobs INDEXED BY jobs_scheduled
            WHERE state = 'scheduled' AND queue = ?1)
    UNION ALL
    SELECT (SELECT min(enqueued_at) FROM jobs INDEXED BY jobs_retrying
            WHERE state = 'retrying' AND queue = ?1)
    UNION ALL
    SELECT (SELECT min(enqueued_at) FROM jobs INDEXED BY jobs_rare
            WHERE (state = 'dead' OR state = 'cancelled' OR state = 'blocked')
              AND queue = ?1 AND state = 'blocked')
);

-- name: timings
-- Finished (succeeded or dead) jobs of queue ?1 since ?2, newest first, at most ?3.
SELECT name, state, enqueued_at, due_at, started_at, finished_at FROM jobs
WHERE queue = ?1 AND finished_at IS NOT NULL AND finished_at >= ?2
  AND state IN ('succeeded', 'dead') AND started_at IS NOT NULL
ORDER BY finished_at DESC LIMIT ?3;

-- name: queue_ids_in_states
-- A queue's jobs in the states of JSON array ?2 (a purge). ?1 queue.
SELECT id FROM jobs INDEXED BY jobs_queue
WHERE queue = ?1 AND state IN (SELECT value FROM json_each(?2));


-- ======================================================================= topics

-- name: topic_get
-- ?1 topic.
SELECT retention_s, max_events, next_pos, replays FROM topics WHERE name = ?1;

-- name: topic_upsert
-- ?1 topic, ?2 retention_s, ?3 max_events.
INSERT INTO topics (name, retention_s, max_events) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET
    retention_s = excluded.retention_s, max_events = excluded.max_events;

-- name: topic_create
-- A topic first seen by publish, with the default retention. ?1 topic, ?2 retention_s.
INSERT INTO topics (name, retention_s, max_events) VALUES (?1, ?2, NULL)
ON CONFLICT (name) DO NOTHING;

-- name: topic_advance
-- ?1 topic, ?2 next offset.
UPDATE topics SET next_pos = ?2 WHERE name = ?1;

-- name: topic_replayed
-- Count a replay; returns its number (suffix of the replayed delivery ids). ?1 topic.
UPDATE topics SET replays = replays + 1 WHERE name = ?1 RETURNING replays;

-- name: topics_all
SELECT name, retention_s, max_events,
       (SELECT min(pos) FROM events WHERE topic = t.name),
       (SELECT max(pos) FROM events WHERE topic = t.name)
FROM topics AS t ORDER BY name;

-- name: group_list
-- ?1 topic.
SELECT grp, from_start, max_attempts, max_recoveries, result_ttl_s, dead_ttl_s, created_at
FROM topic_groups WHERE topic = ?1 ORDER BY rowid;

-- name: group_get
-- ?1 topic, ?2 group.
SELECT grp, from_start, max_attempts, max_recoveries, result_ttl_s, dead_ttl_s, created_at
FROM topic_groups WHERE topic = ?1 AND grp = ?2;

-- name: group_upsert
-- Create a group or update its settings, keeping its created_at. ?1 topic, ?2 group,
-- ?3 from_start, ?4 max_attempts, ?5 max_recoveries, ?6 result_ttl_s, ?7 dead_ttl_s, ?8 now.
INSERT INTO topic_groups (
    topic, grp, from_start, max_attempts, max_recoveries, result_ttl_s, dead_ttl_s, created_at
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT (topic, grp) DO UPDATE SET
    from_start = excluded.from_start, max_attempts = excluded.max_attempts,
    max_recoveries = excluded.max_recoveries, result_ttl_s = excluded.result_ttl_s,
    dead_ttl_s = excluded.dead_ttl_s;

-- name: event_insert
-- ?1 topic, ?2 offset, ?3 id, ?4 published_at, ?5 key, ?6 group_keys (JSON or NULL),
-- ?7 payload.
INSERT INTO events (topic, pos, id, published_at, key, group_keys, payload)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7);

-- name: events_from
-- Retained events of topic ?1 from offset ?2 published at or after ?3 (NULL: any time),
-- in order.
SELECT pos, id, published_at, key, group_keys, payload FROM events
WHERE topic = ?1 AND pos >= ?2 AND (?3 IS NULL OR published_at >= ?3) ORDER BY pos;

-- name: trim_events_by_count
-- Keep the newest ?2 events of topic ?1.
DELETE FROM events
WHERE topic = ?1 AND pos <= (SELECT max(pos) FROM events WHERE topic = ?1) - ?2;

-- name: trim_events_by_age
-- Drop the events of topic ?1 before the first one published at or after ?2.
DELETE FROM events
WHERE topic = ?1 AND pos < coalesce(
    (SELECT pos FROM events WHERE topic = ?1 AND published_at >= ?2 ORDER BY pos LIMIT 1),
    (SELECT next_pos FROM topics WHERE name = ?1));


-- ======================================================================= coordination

-- name: lease_acquire
-- Take or renew named lease ?1 for owner ?2 until ?3; a row comes back only on success.
-- ?4 now.
INSERT INTO named_leases (name, owner, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
    WHERE named_leases.owner = excluded.owner OR named_leases.expires_at <= ?4
RETURNING owner;

-- name: lease_release
-- ?1 name, ?2 owner.
DELETE FROM named_leases WHERE name = ?1 AND owner = ?2 RETURNING owner;

-- name: bucket_init
-- A new bucket starts full. ?1 bucket, ?2 burst, ?3 now.
INSERT INTO buckets (name, tokens, at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING;

-- name: bucket_take
-- Refill at ?2 tokens/s up to ?3, then take ?4 tokens if there are enough; returns 0 or
-- the seconds until there will be. ?1 bucket, ?5 now. SET reads the old row throughout.
-- `at` never moves back, so a call stamped earlier cannot refill an interval twice.
UPDATE buckets SET
    tokens = min(?3, tokens + max(0.0, ?5 - at) * ?2)
             - CASE WHEN min(?3, tokens + max(0.0, ?5 - at) * ?2) >= ?4 THEN ?4 ELSE 0.0 END,
    wait = CASE WHEN min(?3, tokens + max(0.0, ?5 - at) * ?2) >= ?4 THEN 0.0
                ELSE (?4 - min(?3, tokens + max(0.0, ?5 - at) * ?2)) / ?2 END,
    at = max(at, ?5)
WHERE name = ?1
RETURNING wait;

-- name: kv_get
-- ?1 key, ?2 now.
SELECT value FROM kv WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2);

-- name: kv_set
-- ?1 key, ?2 value, ?3 expiry or NULL.
INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at;

-- name: worker_upsert
-- ?1 id, ?2 info (JSON), ?3 expiry.
INSERT INTO workers (id, info, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT (id) DO UPDATE SET info = excluded.info, expires_at = excluded.expires_at;

-- name: worker_delete
-- ?1 id.
DELETE FROM workers WHERE id = ?1;

-- name: workers_live
-- ?1 now.
SELECT info FROM workers WHERE expires_at > ?1 ORDER BY id;
