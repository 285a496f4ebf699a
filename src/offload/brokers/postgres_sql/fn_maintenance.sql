-- Maintenance and repairs: lease recovery, pruning, cancel, requeue, delete.
--
-- Tables: {schema}.jobs, {schema}.job_keys (slots freed or taken), {schema}.events and
--         {schema}.topics (retention), {schema}.kv, {schema}.workers,
--         {schema}.named_leases, {schema}.buckets, {schema}.result_waits (expired rows),
--         {schema}.stats (through the jobs triggers).
-- Lock order, everywhere: key rows (sorted) before the rows of jobs waiting on them.

-- {schema}.recover_expired(limit, now) -> number of jobs recovered
--   Running jobs whose lease expired go back to queued (recoveries + 1), or to dead once
--   recoveries reached max_recoveries; each gets a 'lease_expired' error. SKIP LOCKED lets
--   any number of processes run it at once without doing the same job twice.
CREATE OR REPLACE FUNCTION {schema}.recover_expired(p_limit int, p_now float8)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_count int;
    v_queues text[];
    v_keys text[];
BEGIN
    WITH picked AS (
        SELECT r.id FROM {schema}.jobs r
         WHERE r.state = 'running' AND r.lease_expires <= p_now
         ORDER BY r.lease_expires
         LIMIT p_limit
         FOR UPDATE SKIP LOCKED
    ), moved AS (
        UPDATE {schema}.jobs j SET
            state = CASE WHEN j.recoveries >= j.max_recoveries THEN 'dead' ELSE 'queued' END,
            recoveries = j.recoveries + (j.recoveries < j.max_recoveries)::int,
            finished_at = CASE WHEN j.recoveries >= j.max_recoveries
                               THEN p_now ELSE j.finished_at END,
            expires_at = CASE WHEN j.recoveries >= j.max_recoveries
                              THEN p_now + j.dead_ttl_s ELSE j.expires_at END,
            errors = j.errors || jsonb_build_array(jsonb_build_object(
                'reason', 'lease_expired',
                'message', 'the worker stopped renewing its lease (crashed, killed or hung)',
                'attempt', j.attempts,
                'at', p_now,
                'worker_id', coalesce(j.worker_id, ''))),
            lease_token = NULL,
            lease_expires = NULL
          FROM picked
         WHERE j.id = picked.id
        RETURNING j.queue, j.key, j.state
    )
    SELECT count(*),
           array_agg(m.queue) FILTER (WHERE m.key IS NOT NULL AND m.state = 'dead'),
           array_agg(m.key) FILTER (WHERE m.key IS NOT NULL AND m.state = 'dead')
      INTO v_count, v_queues, v_keys
      FROM moved m;
    IF v_keys IS NOT NULL THEN
        PERFORM {schema}.free_slots(
            v_queues, v_keys, array_fill(true, ARRAY[cardinality(v_keys)]), p_now);
    END IF;
    RETURN v_count;
END $$;


-- Lock (creating if missing) the key rows of those of these jobs that are in p_states,
-- in (queue, key) order, before their job rows are locked: cancel, delete and requeue
-- never take locks in the opposite order of a settle.
CREATE OR REPLACE FUNCTION {schema}.lock_keys_of(p_ids text[], p_states text[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.lock_keys(x.queues, x.keys)
       FROM (SELECT array_agg(j.queue) AS queues, array_agg(j.key) AS keys
               FROM {schema}.jobs j
              WHERE j.id = ANY (p_ids) AND j.key IS NOT NULL
                AND j.state = ANY (p_states)) x
      WHERE x.keys IS NOT NULL;
END $$;


-- Move unfinished, not running jobs to cancelled (freeing their key slots or their
-- place in the blocked line). Returns how many moved.
CREATE OR REPLACE FUNCTION {schema}.cancel_pending(p_ids text[], p_now float8)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_count int;
    v_queues text[];
    v_keys text[];
    v_held boolean[];
BEGIN
    PERFORM {schema}.lock_keys_of(p_ids, '{scheduled,queued,blocked,retrying}');
    WITH target AS (
        SELECT t.id, t.state AS old_state FROM {schema}.jobs t
         WHERE t.id = ANY (p_ids)
           AND t.state IN ('scheduled', 'queued', 'blocked', 'retrying')
         ORDER BY t.id
           FOR UPDATE
    ), moved AS (
        UPDATE {schema}.jobs j SET
            state = 'cancelled',
            finished_at = p_now,
            expires_at = p_now + j.result_ttl_s,
            lease_token = NULL,
            lease_expires = NULL
          FROM target
         WHERE j.id = target.id
        RETURNING j.queue, j.key, target.old_state
    )
    SELECT count(*),
           array_agg(m.queue) FILTER (WHERE m.key IS NOT NULL),
           array_agg(m.key) FILTER (WHERE m.key IS NOT NULL),
           array_agg(m.old_state <> 'blocked') FILTER (WHERE m.key IS NOT NULL)
      INTO v_count, v_queues, v_keys, v_held
      FROM moved m;
    IF v_keys IS NOT NULL THEN
        PERFORM {schema}.free_slots(v_queues, v_keys, v_held, p_now);
    END IF;
    RETURN v_count;
END $$;


-- {schema}.cancel(ids, now) -> the state of each job afterwards (NULL: unknown id)
--   Pending jobs end cancelled at once; running ones get cancel_requested, which the
--   worker sees on its next extend.
CREATE OR REPLACE FUNCTION {schema}.cancel(p_ids text[], p_now float8)
RETURNS TABLE (state text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.cancel_pending(p_ids, p_now);
    UPDATE {schema}.jobs j SET cancel_requested = true
     WHERE j.id = ANY (p_ids) AND j.state = 'running' AND NOT j.cancel_requested;
    RETURN QUERY
        SELECT j.state FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
          LEFT JOIN {schema}.jobs j ON j.id = u.id
         ORDER BY u.ord;
END $$;


-- {schema}.delete_jobs(ids, now) -> number deleted
--   Running jobs are left alone; unfinished ones are cancelled first (so counters see
--   them leave the system and their key slots are freed), then every row goes.
CREATE OR REPLACE FUNCTION {schema}.delete_jobs(p_ids text[], p_now float8)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_count int;
BEGIN
    PERFORM {schema}.cancel_pending(p_ids, p_now);
    DELETE FROM {schema}.jobs j WHERE j.id = ANY (p_ids) AND j.state <> 'running';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END $$;


-- {schema}.requeue(ids, now) -> number requeued
--   Dead or cancelled jobs enter the queue again as if new (fresh attempts, enqueued now,
--   a new place in line, taking a key slot or waiting for one); their error history
--   stays. A dedupe key another unfinished job holds by now is dropped.
CREATE OR REPLACE FUNCTION {schema}.requeue(p_ids text[], p_now float8)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_count int := 0;
    v_state text;
BEGIN
    PERFORM {schema}.lock_keys_of(p_ids, '{dead,cancelled}');
    FOR r IN
        SELECT j.id, j.queue, j.key, j.key_limit, j.dedupe_key FROM {schema}.jobs j
         WHERE j.id = ANY (p_ids) AND j.state IN ('dead', 'cancelled')
         ORDER BY j.seq
           FOR UPDATE
    LOOP
        v_state := 'queued';
        IF r.key IS NOT NULL THEN
            v_state := {schema}.take_slot(r.queue, r.key, r.key_limit, v_state);
        END IF;
        UPDATE {schema}.jobs j SET
            state = v_state,
            seq = DEFAULT,
            attempts = 0, recoveries = 0, waited = false, cancel_requested = false,
            started_at = NULL, finished_at = NULL, expires_at = NULL, result = NULL,
            enqueued_at = p_now, run_at = p_now, due_at = p_now,
            dedupe_key = CASE WHEN {schema}.holder_of(NULL, r.queue, r.dedupe_key) IS NULL
                              THEN r.dedupe_key END
         WHERE j.id = r.id;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END $$;


-- {schema}.prune(limit, now) -> number of jobs and events deleted
--   Deletes up to `limit` final jobs whose TTL passed, then up to `limit` events beyond
--   their topic's max_events or older than its retention, and expired kv entries,
--   workers, named leases, result waits, idle key rows and full token buckets (those
--   equal a missing row). Call it
--   again while it returns `limit` or more.
CREATE OR REPLACE FUNCTION {schema}.prune(p_limit int, p_now float8)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_jobs int;
    v_events int;
BEGIN
    DELETE FROM {schema}.jobs j WHERE j.id IN (
        SELECT x.id FROM {schema}.jobs x
         WHERE x.state IN ('succeeded', 'dead', 'cancelled') AND x.expires_at <= p_now
         ORDER BY x.expires_at
         LIMIT p_limit
         FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_jobs = ROW_COUNT;

    DELETE FROM {schema}.events e WHERE (e.topic, e."offset") IN (
        SELECT x.topic, x."offset"
          FROM {schema}.topics t
          CROSS JOIN LATERAL (
            (SELECT y.topic, y."offset" FROM {schema}.events y
              WHERE y.topic = t.name AND t.max_events IS NOT NULL
              ORDER BY y."offset" DESC OFFSET t.max_events)
            UNION ALL
            (SELECT y.topic, y."offset" FROM {schema}.events y
              WHERE y.topic = t.name AND t.retention_s IS NOT NULL
                AND y.published_at < p_now - t.retention_s)
          ) x
         LIMIT p_limit);
    GET DIAGNOSTICS v_events = ROW_COUNT;

    DELETE FROM {schema}.kv k WHERE k.key IN (
        SELECT x.key FROM {schema}.kv x WHERE x.expires_at <= p_now LIMIT p_limit);
    DELETE FROM {schema}.workers w WHERE w.id IN (
        SELECT x.id FROM {schema}.workers x WHERE x.expires_at <= p_now LIMIT p_limit);
    -- An expired lease stays a day so its owner can still release it (as it may).
    DELETE FROM {schema}.named_leases l WHERE l.expires_at <= p_now - 86400;
    DELETE FROM {schema}.buckets b
     WHERE b.tokens + (p_now - b.at) * b.rate >= b.burst;
    DELETE FROM {schema}.result_waits r WHERE r.until < p_now;
    -- Key rows with neither running nor waiting jobs (left by an enqueue that lost a
    -- race) are dead weight; a row some transaction holds is skipped.
    DELETE FROM {schema}.job_keys k WHERE k.ctid = ANY (ARRAY(
        SELECT x.ctid FROM {schema}.job_keys x
         WHERE x.active <= 0 AND x.blocked <= 0
         LIMIT p_limit FOR UPDATE SKIP LOCKED));
    RETURN v_jobs + v_events;
END $$;


-- {schema}.vacuum_due(min_dead) -> the tables prune should VACUUM now
--   Only where autovacuum will not (off on the server, or for that table) and dead rows
--   passed both min_dead and a tenth of the live ones; the counts come from the
--   cumulative statistics (pg_stat_user_tables), which lag by a second or so.
CREATE OR REPLACE FUNCTION {schema}.vacuum_due(p_min_dead bigint) RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT s.relname::text
      FROM pg_stat_user_tables s
      JOIN pg_class c ON c.oid = s.relid
     WHERE s.schemaname = {schema_name}
       AND (current_setting('autovacuum') = 'off'
            OR 'autovacuum_enabled=false' = ANY (coalesce(c.reloptions, '{}')))
       AND s.n_dead_tup > greatest(p_min_dead, s.n_live_tup / 10)
     ORDER BY s.n_dead_tup DESC
$$;
