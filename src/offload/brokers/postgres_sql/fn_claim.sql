-- Claim: hand out due jobs under fresh, fenced leases.
--
-- Tables: {schema}.jobs (row locks with FOR UPDATE SKIP LOCKED, so concurrent claimers
--         never wait for each other and never take the same job), {schema}.stats (through
--         the jobs triggers).
--
-- {schema}.claim(queues, worker_id, limit, lease_s, now)
--   Queue by queue in the order given (the caller rotates it for fairness), until
--   `limit` jobs are taken:
--   1. promotes the queue's scheduled/retrying jobs whose run_at <= now to queued (at
--      most 1000 per call, earliest first);
--   2. takes its queued jobs, highest priority first, then earliest run_at, then enqueue
--      order; marks them running with attempts + 1, a random lease token and
--      lease_expires = now + lease_s.
--   Returns the deliveries in claim order.

CREATE OR REPLACE FUNCTION {schema}.claim(
    p_queues text[], p_worker text, p_limit int, p_lease_s float8, p_now float8)
RETURNS TABLE (
    id text, queue text, name text, kind text, payload bytea, attempts int,
    max_attempts int, recoveries int, lease_token bigint, lease_expires float8,
    enqueued_at float8, priority int, key text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_queue text;
    v_left int := p_limit;
    v_got int;
    v_due float8;
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;
    FOREACH v_queue IN ARRAY p_queues LOOP
        -- Promote what came due. Every statement here reads one queue through the index
        -- made for it, in that index's order, so the cached generic plans stay right
        -- however many delayed or queued jobs there are.
        SELECT d.run_at INTO v_due FROM {schema}.jobs d
         WHERE d.queue = v_queue AND d.state IN ('scheduled', 'retrying')
         ORDER BY d.run_at LIMIT 1;
        IF v_due <= p_now THEN
            UPDATE {schema}.jobs j SET state = 'queued'
             WHERE j.ctid = ANY (ARRAY(
                SELECT d.ctid FROM {schema}.jobs d
                 WHERE d.queue = v_queue AND d.state IN ('scheduled', 'retrying')
                   AND d.run_at <= p_now
                 ORDER BY d.run_at
                 LIMIT 1000
                 FOR UPDATE SKIP LOCKED));
        END IF;

        -- The picked rows are locked by this statement, so their ctids are stable: the
        -- update reaches them by TID instead of descending the primary key again.
        RETURN QUERY
        WITH taken AS (
            UPDATE {schema}.jobs j
               SET state = 'running',
                   attempts = j.attempts + 1,
                   waited = true,
                   started_at = p_now,
                   worker_id = p_worker,
                   lease_token = 1 + floor(random() * 4611686018427387903)::bigint,
                   lease_expires = p_now + p_lease_s
             WHERE j.ctid = ANY (ARRAY(
                SELECT r.ctid FROM {schema}.jobs r
                 WHERE r.queue = v_queue AND r.state = 'queued'
                 ORDER BY r.priority DESC, r.run_at, r.seq
                 LIMIT v_left
                 FOR UPDATE SKIP LOCKED))
            RETURNING j.id, j.queue, j.name, j.kind, j.payload, j.attempts, j.max_attempts,
                      j.recoveries, j.lease_token, j.lease_expires, j.enqueued_at,
                      j.priority, j.key, j.run_at, j.seq
        )
        SELECT t.id, t.queue, t.name, t.kind, t.payload, t.attempts, t.max_attempts,
               t.recoveries, t.lease_token, t.lease_expires, t.enqueued_at, t.priority, t.key
          FROM taken t
         ORDER BY t.priority DESC, t.run_at, t.seq;
        GET DIAGNOSTICS v_got = ROW_COUNT;
        v_left := v_left - v_got;
        EXIT WHEN v_left <= 0;
    END LOOP;
END $$;


-- The earliest run_at of the delayed jobs of these queues (how long an idle claim may
-- sleep before something comes due): one ordered index read per queue.
CREATE OR REPLACE FUNCTION {schema}.next_due(p_queues text[]) RETURNS float8
LANGUAGE sql STABLE AS $$
    SELECT min(f.run_at)
      FROM unnest(p_queues) AS q(queue),
           LATERAL (SELECT d.run_at FROM {schema}.jobs d
                     WHERE d.queue = q.queue AND d.state IN ('scheduled', 'retrying')
                     ORDER BY d.run_at LIMIT 1) f
$$;
