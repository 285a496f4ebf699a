-- State counts, Little's-Law counters and wake-up hints, kept by statement-level triggers
-- on {schema}.jobs. Every statement that inserts, changes or deletes jobs rolls its whole
-- batch into one upsert per (queue, task name) of {schema}.stats, in the same transaction,
-- so counts can never drift from the rows, whichever code path changed them.
--
-- Tables: reads jobs through the transition tables and {schema}.result_waits; writes
--         {schema}.stats.
-- Notifies channel {channel} (coalesced: PostgreSQL folds identical payloads of one
-- transaction into one notification):
--   'q:<queue>'  jobs entered queued in that queue (wake idle claimers)
--   'd:<queue>'  jobs of that queue reached a final state while {schema}.result_waits
--                says someone awaits results there (wake result waiters)
-- Shard: pg_backend_pid() % 16, so concurrent transactions rarely touch the same row.

CREATE OR REPLACE FUNCTION {schema}.jobs_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.stats AS t (
        queue, name, shard, n_scheduled, n_queued, n_blocked,
        enqueued, in_system, in_system_enq_s)
    SELECT n.queue, n.name, pg_backend_pid() % 16,
           count(*) FILTER (WHERE n.state = 'scheduled'),
           count(*) FILTER (WHERE n.state = 'queued'),
           count(*) FILTER (WHERE n.state = 'blocked'),
           count(*), count(*), sum(n.enqueued_at - 1700000000.0)
    FROM new_rows n
    GROUP BY n.queue, n.name
    ORDER BY n.queue, n.name
    ON CONFLICT (queue, name, shard) DO UPDATE SET
        n_scheduled = t.n_scheduled + excluded.n_scheduled,
        n_queued = t.n_queued + excluded.n_queued,
        n_blocked = t.n_blocked + excluded.n_blocked,
        enqueued = t.enqueued + excluded.enqueued,
        in_system = t.in_system + excluded.in_system,
        in_system_enq_s = t.in_system_enq_s + excluded.in_system_enq_s;
    PERFORM pg_notify({channel}, 'q:' || q.queue)
    FROM (SELECT DISTINCT n.queue FROM new_rows n WHERE n.state = 'queued') q;
    RETURN NULL;
END $$;

-- Plans of trigger queries are cached from their first run, when the planner believes
-- a transition table holds one row; a nested loop over old x new rows would then cost
-- O(n^2) on every large batch, so the join is kept to hashing.
CREATE OR REPLACE FUNCTION {schema}.jobs_updated() RETURNS trigger
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    v_notified int;
BEGIN
    WITH d AS (
        SELECT n.queue, n.name,
               (n.state = 'scheduled')::int - (o.state = 'scheduled')::int AS n_scheduled,
               (n.state = 'queued')::int - (o.state = 'queued')::int AS n_queued,
               (n.state = 'blocked')::int - (o.state = 'blocked')::int AS n_blocked,
               (n.state = 'running')::int - (o.state = 'running')::int AS n_running,
               (n.state = 'retrying')::int - (o.state = 'retrying')::int AS n_retrying,
               (n.state = 'succeeded')::int - (o.state = 'succeeded')::int AS n_succeeded,
               (n.state = 'dead')::int - (o.state = 'dead')::int AS n_dead,
               (n.state = 'cancelled')::int - (o.state = 'cancelled')::int AS n_cancelled,
               -- a final job brought back (requeue) enters the system again
               (f.o_final AND NOT f.n_final)::int AS enqueued,
               (n.attempts > o.attempts)::int AS started,
               (n.waited AND NOT o.waited)::int AS waited,
               (f.n_final AND NOT f.o_final AND n.state = 'succeeded')::int AS succeeded,
               (f.n_final AND NOT f.o_final AND n.state = 'dead')::int AS dead,
               (f.n_final AND NOT f.o_final AND n.state = 'cancelled')::int AS cancelled,
               (o.state = 'running' AND n.state = 'retrying')::int AS retried,
               (n.recoveries > o.recoveries)::int AS recovered,
               CASE WHEN n.waited AND NOT o.waited
                    THEN greatest(0, n.started_at - n.due_at) ELSE 0 END AS wait_s,
               n.service_s - o.service_s AS service_s,
               CASE WHEN f.n_final AND NOT f.o_final
                    THEN n.finished_at - n.enqueued_at ELSE 0 END AS system_s,
               (f.o_final AND NOT f.n_final)::int - (f.n_final AND NOT f.o_final)::int
                   AS in_system,
               CASE WHEN f.o_final AND NOT f.n_final THEN n.enqueued_at - 1700000000.0
                    WHEN f.n_final AND NOT f.o_final THEN 1700000000.0 - o.enqueued_at
                    ELSE 0 END AS in_system_enq_s,
               n.state = 'queued' AND o.state <> 'queued' AS woke,
               CASE WHEN f.n_final AND NOT f.o_final THEN n.finished_at END AS ended_at
        FROM old_rows o
        JOIN new_rows n ON n.id = o.id,
        LATERAL (SELECT o.state IN ('succeeded', 'dead', 'cancelled') AS o_final,
                        n.state IN ('succeeded', 'dead', 'cancelled') AS n_final) f
        WHERE o.state <> n.state OR o.attempts <> n.attempts
           OR o.recoveries <> n.recoveries OR o.service_s <> n.service_s
           OR o.waited <> n.waited
    ), agg AS (
        SELECT d.queue, d.name,
               sum(d.n_scheduled) AS n_scheduled, sum(d.n_queued) AS n_queued,
               sum(d.n_blocked) AS n_blocked, sum(d.n_running) AS n_running,
               sum(d.n_retrying) AS n_retrying, sum(d.n_succeeded) AS n_succeeded,
               sum(d.n_dead) AS n_dead, sum(d.n_cancelled) AS n_cancelled,
               sum(d.enqueued) AS enqueued, sum(d.started) AS started,
               sum(d.waited) AS waited, sum(d.succeeded) AS succeeded, sum(d.dead) AS dead,
               sum(d.cancelled) AS cancelled, sum(d.retried) AS retried,
               sum(d.recovered) AS recovered, sum(d.wait_s) AS wait_s,
               sum(d.service_s) AS service_s, sum(d.system_s) AS system_s,
               sum(d.in_system) AS in_system, sum(d.in_system_enq_s) AS in_system_enq_s,
               bool_or(d.woke) AS woke, max(d.ended_at) AS ended_at
        FROM d
        GROUP BY d.queue, d.name
    ), up AS (
        INSERT INTO {schema}.stats AS t (
            queue, name, shard,
            n_scheduled, n_queued, n_blocked, n_running, n_retrying,
            n_succeeded, n_dead, n_cancelled,
            enqueued, started, waited, succeeded, dead, cancelled, retried, recovered,
            wait_s, service_s, system_s, in_system, in_system_enq_s)
        SELECT a.queue, a.name, pg_backend_pid() % 16,
               a.n_scheduled, a.n_queued, a.n_blocked, a.n_running, a.n_retrying,
               a.n_succeeded, a.n_dead, a.n_cancelled,
               a.enqueued, a.started, a.waited, a.succeeded, a.dead, a.cancelled,
               a.retried, a.recovered, a.wait_s, a.service_s, a.system_s, a.in_system,
               a.in_system_enq_s
        FROM agg a
        ORDER BY a.queue, a.name
        ON CONFLICT (queue, name, shard) DO UPDATE SET
            n_scheduled = t.n_scheduled + excluded.n_scheduled,
            n_queued = t.n_queued + excluded.n_queued,
            n_blocked = t.n_blocked + excluded.n_blocked,
            n_running = t.n_running + excluded.n_running,
            n_retrying = t.n_retrying + excluded.n_retrying,
            n_succeeded = t.n_succeeded + excluded.n_succeeded,
            n_dead = t.n_dead + excluded.n_dead,
            n_cancelled = t.n_cancelled + excluded.n_cancelled,
            enqueued = t.enqueued + excluded.enqueued,
            started = t.started + excluded.started,
            waited = t.waited + excluded.waited,
            succeeded = t.succeeded + excluded.succeeded,
            dead = t.dead + excluded.dead,
            cancelled = t.cancelled + excluded.cancelled,
            retried = t.retried + excluded.retried,
            recovered = t.recovered + excluded.recovered,
            wait_s = t.wait_s + excluded.wait_s,
            service_s = t.service_s + excluded.service_s,
            system_s = t.system_s + excluded.system_s,
            in_system = t.in_system + excluded.in_system,
            in_system_enq_s = t.in_system_enq_s + excluded.in_system_enq_s
    )
    SELECT count(pg_notify({channel}, w.msg)) INTO v_notified
    FROM (SELECT DISTINCT 'q:' || a.queue AS msg FROM agg a WHERE a.woke
          UNION
          SELECT DISTINCT 'd:' || a.queue FROM agg a
           WHERE a.ended_at IS NOT NULL
             AND EXISTS (SELECT 1 FROM {schema}.result_waits r
                          WHERE r.queue = a.queue AND r.until >= a.ended_at)) w;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION {schema}.jobs_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.stats AS t (
        queue, name, shard,
        n_scheduled, n_queued, n_blocked, n_running, n_retrying,
        n_succeeded, n_dead, n_cancelled, in_system, in_system_enq_s)
    SELECT o.queue, o.name, pg_backend_pid() % 16,
           -count(*) FILTER (WHERE o.state = 'scheduled'),
           -count(*) FILTER (WHERE o.state = 'queued'),
           -count(*) FILTER (WHERE o.state = 'blocked'),
           -count(*) FILTER (WHERE o.state = 'running'),
           -count(*) FILTER (WHERE o.state = 'retrying'),
           -count(*) FILTER (WHERE o.state = 'succeeded'),
           -count(*) FILTER (WHERE o.state = 'dead'),
           -count(*) FILTER (WHERE o.state = 'cancelled'),
           -- rows deleted unfinished (by hand) leave the system too
           -count(*) FILTER (WHERE o.state NOT IN ('succeeded', 'dead', 'cancelled')),
           coalesce(-sum(o.enqueued_at - 1700000000.0)
                    FILTER (WHERE o.state NOT IN ('succeeded', 'dead', 'cancelled')), 0)
    FROM old_rows o
    GROUP BY o.queue, o.name
    ORDER BY o.queue, o.name
    ON CONFLICT (queue, name, shard) DO UPDATE SET
        n_scheduled = t.n_scheduled + excluded.n_scheduled,
        n_queued = t.n_queued + excluded.n_queued,
        n_blocked = t.n_blocked + excluded.n_blocked,
        n_running = t.n_running + excluded.n_running,
        n_retrying = t.n_retrying + excluded.n_retrying,
        n_succeeded = t.n_succeeded + excluded.n_succeeded,
        n_dead = t.n_dead + excluded.n_dead,
        n_cancelled = t.n_cancelled + excluded.n_cancelled,
        in_system = t.in_system + excluded.in_system,
        in_system_enq_s = t.in_system_enq_s + excluded.in_system_enq_s;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS jobs_inserted ON {schema}.jobs;
CREATE TRIGGER jobs_inserted AFTER INSERT ON {schema}.jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.jobs_inserted();

DROP TRIGGER IF EXISTS jobs_updated ON {schema}.jobs;
CREATE TRIGGER jobs_updated AFTER UPDATE ON {schema}.jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.jobs_updated();

DROP TRIGGER IF EXISTS jobs_deleted ON {schema}.jobs;
CREATE TRIGGER jobs_deleted AFTER DELETE ON {schema}.jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.jobs_deleted();
