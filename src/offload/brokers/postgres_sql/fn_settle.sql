-- Settle: record the outcomes of a batch of deliveries in one transaction.
--
-- Tables: {schema}.jobs (fenced update; follow-up inserts), {schema}.job_keys (slots of
--         jobs that ended), {schema}.stats (through the jobs triggers).
--
-- {schema}.settle(ids, tokens, kinds, results, errors, delays, now, <follow-ups>)
--   kinds: 'ack' -> succeeded (result stored), 'retry' -> retrying (run_at = now + delay),
--   'bury' -> dead, 'cancel' -> cancelled, 'release' -> queued or scheduled after delay,
--   with the attempt given back. errors: an ErrorRecord as JSON, appended when not NULL.
--   Fencing: a settlement applies only while the job is running under that lease token
--   and lease_expires > now; otherwise it changes nothing. When one job appears twice in
--   a batch, the first settlement is the one that can apply.
--   Follow-ups (optional): enqueue arrays (as {schema}.enqueue, without max_depths) plus
--   f_parents, the 1-based position
--   of the settlement each belongs to; a follow-up is stored (unbounded) only if its
--   settlement applied, in the same transaction.
--   Returns one boolean per settlement, in order: did it apply.

CREATE OR REPLACE FUNCTION {schema}.settle(
    p_ids text[], p_tokens bigint[], p_kinds text[], p_results bytea[], p_errors jsonb[],
    p_delays float8[], p_now float8,
    f_parents int[] DEFAULT '{}', f_ids text[] DEFAULT '{}', f_queues text[] DEFAULT '{}',
    f_names text[] DEFAULT '{}', f_kinds text[] DEFAULT '{}', f_payloads bytea[] DEFAULT '{}',
    f_enqueued_ats float8[] DEFAULT '{}', f_priorities int[] DEFAULT '{}',
    f_etas float8[] DEFAULT '{}', f_keys text[] DEFAULT '{}', f_key_limits int[] DEFAULT '{}',
    f_dedupe_keys text[] DEFAULT '{}', f_max_attempts int[] DEFAULT '{}',
    f_max_recoveries int[] DEFAULT '{}', f_result_ttls float8[] DEFAULT '{}',
    f_dead_ttls float8[] DEFAULT '{}')
RETURNS SETOF boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_ok bigint[];
    v_queues text[];
    v_keys text[];
BEGIN
    WITH s AS (
        SELECT DISTINCT ON (u.id) u.*
          FROM unnest(p_ids, p_tokens, p_kinds, p_results, p_errors, p_delays)
               WITH ORDINALITY AS u(id, token, kind, result, error, delay, ord)
         ORDER BY u.id, u.ord
    ), done AS (
        UPDATE {schema}.jobs j SET
            state = CASE s.kind
                WHEN 'ack' THEN 'succeeded'
                WHEN 'retry' THEN 'retrying'
                WHEN 'bury' THEN 'dead'
                WHEN 'cancel' THEN 'cancelled'
                ELSE CASE WHEN s.delay > 0 THEN 'scheduled' ELSE 'queued' END END,
            attempts = j.attempts - (s.kind = 'release')::int,
            run_at = CASE WHEN s.kind IN ('retry', 'release')
                          THEN p_now + s.delay ELSE j.run_at END,
            service_s = j.service_s + CASE WHEN s.kind = 'release'
                                           THEN 0 ELSE p_now - j.started_at END,
            result = CASE WHEN s.kind = 'ack' THEN s.result ELSE j.result END,
            errors = CASE WHEN s.error IS NULL THEN j.errors
                          ELSE j.errors || jsonb_build_array(s.error) END,
            finished_at = CASE WHEN s.kind IN ('ack', 'bury', 'cancel')
                               THEN p_now ELSE j.finished_at END,
            expires_at = CASE s.kind
                WHEN 'bury' THEN p_now + j.dead_ttl_s
                WHEN 'ack' THEN p_now + j.result_ttl_s
                WHEN 'cancel' THEN p_now + j.result_ttl_s
                ELSE j.expires_at END,
            lease_token = NULL,
            lease_expires = NULL
          FROM s
         WHERE j.id = ANY (p_ids) AND j.id = s.id
           -- The fence, kept out of reach of the partial indexes: jobs are found by id
           -- (one primary-key probe each), never by scanning every running job, whatever
           -- stale statistics say about how many there are.
           AND (j.state = 'running' AND j.lease_token = s.token
                AND j.lease_expires > p_now) IS TRUE
        RETURNING s.ord, j.queue, j.key, j.state
    )
    SELECT array_agg(d.ord),
           array_agg(d.queue) FILTER (WHERE d.key IS NOT NULL
                                        AND d.state IN ('succeeded', 'dead', 'cancelled')),
           array_agg(d.key) FILTER (WHERE d.key IS NOT NULL
                                      AND d.state IN ('succeeded', 'dead', 'cancelled'))
      INTO v_ok, v_queues, v_keys
      FROM done d;

    IF v_keys IS NOT NULL THEN
        PERFORM {schema}.free_slots(
            v_queues, v_keys, array_fill(true, ARRAY[cardinality(v_keys)]), p_now);
    END IF;
    IF cardinality(f_ids) > 0 AND v_ok IS NOT NULL THEN
        PERFORM {schema}.enqueue(
            ARRAY(SELECT CASE WHEN f.parent = ANY (v_ok) THEN f.id END
                    FROM unnest(f_ids, f_parents) WITH ORDINALITY AS f(id, parent, ord)
                   ORDER BY f.ord),
            f_queues, f_names, f_kinds, f_payloads, f_enqueued_ats, f_priorities, f_etas,
            f_keys, f_key_limits, f_dedupe_keys, f_max_attempts, f_max_recoveries,
            NULL::int[], f_result_ttls, f_dead_ttls, p_now, false);
    END IF;
    RETURN QUERY
        SELECT o.ord IS NOT NULL
          FROM generate_series(1, coalesce(array_length(p_ids, 1), 0)) AS n
          LEFT JOIN unnest(v_ok) AS o(ord) ON o.ord = n
         ORDER BY n;
END $$;
