-- Enqueue: store a batch of jobs, each request atomic on its own, in the caller's
-- transaction (so an outbox enqueue exists if and only if that transaction commits).
--
-- Tables: {schema}.jobs (insert), {schema}.job_keys (slots of keyed jobs),
--         {schema}.queues (row lock that makes a bound check atomic), {schema}.stats (read
--         for the depth; written by the jobs triggers).
--
-- {schema}.enqueue(ids, queues, names, kinds, payloads, enqueued_ats, priorities, etas,
--                  keys, key_limits, dedupe_keys, max_attempts, max_recoveries,
--                  max_depths, result_ttls, dead_ttls, now, bounded)
--   One array element per request (NULL id: skip that element). Returns one row per
--   request, in order: status 'queued' | 'duplicate' | 'full', the job id (for a
--   duplicate: the id of the job that holds the id or dedupe key) and the depth (full).
--   bounded = false ignores max_depth (follow-ups and event deliveries).
--
-- A batch without keys, bounds or repeated ids is one INSERT ... ON CONFLICT DO NOTHING
-- (the primary key and the partial unique dedupe index are its arbiters). Anything else
-- goes through {schema}.enqueue_one per request, in order.

CREATE OR REPLACE FUNCTION {schema}.enqueue(
    p_ids text[], p_queues text[], p_names text[], p_kinds text[], p_payloads bytea[],
    p_enqueued_ats float8[], p_priorities int[], p_etas float8[], p_keys text[],
    p_key_limits int[], p_dedupe_keys text[], p_max_attempts int[], p_max_recoveries int[],
    p_max_depths int[], p_result_ttls float8[], p_dead_ttls float8[], p_now float8,
    p_bounded boolean DEFAULT true)
RETURNS TABLE (status text, job_id text, depth bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_simple boolean;
    v_inserted text[];
BEGIN
    SELECT bool_and(u.key IS NULL AND (NOT p_bounded OR u.max_depth IS NULL))
           AND count(DISTINCT u.id) = count(u.id)
      INTO v_simple
      FROM unnest(p_ids, p_keys, p_max_depths) AS u(id, key, max_depth);
    IF NOT coalesce(v_simple, true) THEN
        PERFORM {schema}.lock_keys(p_queues, p_keys);
        FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
            CONTINUE WHEN p_ids[i] IS NULL;
            RETURN QUERY SELECT * FROM {schema}.enqueue_one(
                p_ids[i], p_queues[i], p_names[i], p_kinds[i], p_payloads[i],
                p_enqueued_ats[i], p_priorities[i], p_etas[i], p_keys[i], p_key_limits[i],
                p_dedupe_keys[i], p_max_attempts[i], p_max_recoveries[i],
                CASE WHEN p_bounded THEN p_max_depths[i] END, p_result_ttls[i],
                p_dead_ttls[i], p_now);
        END LOOP;
        RETURN;
    END IF;

    WITH ins AS (
        INSERT INTO {schema}.jobs (
            id, queue, name, kind, state, payload, priority, key_limit, dedupe_key,
            max_attempts, max_recoveries, result_ttl_s, dead_ttl_s,
            enqueued_at, run_at, due_at)
        SELECT r.id, r.queue, r.name, r.kind,
               CASE WHEN coalesce(r.eta, r.enqueued_at) > p_now
                    THEN 'scheduled' ELSE 'queued' END,
               r.payload, r.priority, r.key_limit, r.dedupe_key,
               r.max_attempts, r.max_recoveries, r.result_ttl, r.dead_ttl,
               r.enqueued_at, coalesce(r.eta, r.enqueued_at),
               greatest(coalesce(r.eta, r.enqueued_at), r.enqueued_at)
        FROM unnest(p_ids, p_queues, p_names, p_kinds, p_payloads, p_enqueued_ats,
                    p_priorities, p_etas, p_key_limits, p_dedupe_keys, p_max_attempts,
                    p_max_recoveries, p_result_ttls, p_dead_ttls) WITH ORDINALITY
             AS r(id, queue, name, kind, payload, enqueued_at, priority, eta, key_limit,
                  dedupe_key, max_attempts, max_recoveries, result_ttl, dead_ttl, ord)
        WHERE r.id IS NOT NULL
        ORDER BY r.ord
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT array_agg(ins.id) INTO v_inserted FROM ins;

    RETURN QUERY
    SELECT CASE WHEN i.id IS NOT NULL THEN 'queued' ELSE 'duplicate' END,
           CASE WHEN i.id IS NOT NULL THEN r.id
                ELSE coalesce(
                    (SELECT j.id FROM {schema}.jobs j WHERE j.id = r.id),
                    (SELECT j.id FROM {schema}.jobs j
                      WHERE j.queue = r.queue AND j.dedupe_key = r.dedupe_key
                        AND j.state IN ('scheduled', 'queued', 'blocked', 'running',
                                        'retrying')),
                    r.id)
           END,
           0::bigint
    FROM unnest(p_ids, p_queues, p_dedupe_keys) WITH ORDINALITY
         AS r(id, queue, dedupe_key, ord)
    LEFT JOIN unnest(v_inserted) AS i(id) ON i.id = r.id
    WHERE r.id IS NOT NULL
    ORDER BY r.ord;
END $$;


-- One request, with every rule: id and dedupe collisions, the queue bound (under the
-- queue's row lock), and the key's slots (under the key's row lock).
CREATE OR REPLACE FUNCTION {schema}.enqueue_one(
    p_id text, p_queue text, p_name text, p_kind text, p_payload bytea,
    p_enqueued_at float8, p_priority int, p_eta float8, p_key text, p_key_limit int,
    p_dedupe_key text, p_max_attempts int, p_max_recoveries int, p_max_depth int,
    p_result_ttl float8, p_dead_ttl float8, p_now float8)
RETURNS TABLE (status text, job_id text, depth bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_holder text;
    v_depth bigint;
    v_run_at float8 := coalesce(p_eta, p_enqueued_at);
    v_state text;
    v_got text;
BEGIN
    v_holder := {schema}.holder_of(p_id, p_queue, p_dedupe_key);
    IF v_holder IS NOT NULL THEN
        RETURN QUERY SELECT 'duplicate'::text, v_holder, 0::bigint;
        RETURN;
    END IF;
    IF p_max_depth IS NOT NULL THEN
        v_depth := {schema}.lock_depth(p_queue);
        IF v_depth >= p_max_depth THEN
            RETURN QUERY SELECT 'full'::text, p_id, v_depth;
            RETURN;
        END IF;
    END IF;
    v_state := CASE WHEN v_run_at > p_now THEN 'scheduled' ELSE 'queued' END;
    IF p_key IS NOT NULL THEN
        v_state := {schema}.take_slot(p_queue, p_key, greatest(1, p_key_limit), v_state);
    END IF;
    INSERT INTO {schema}.jobs (
        id, queue, name, kind, state, payload, priority, key, key_limit, dedupe_key,
        max_attempts, max_recoveries, result_ttl_s, dead_ttl_s, enqueued_at, run_at, due_at)
    VALUES (p_id, p_queue, p_name, p_kind, v_state, p_payload, p_priority, p_key,
            greatest(1, p_key_limit), p_dedupe_key, p_max_attempts, p_max_recoveries,
            p_result_ttl, p_dead_ttl, p_enqueued_at, v_run_at,
            greatest(v_run_at, p_enqueued_at))
    ON CONFLICT DO NOTHING
    RETURNING id INTO v_got;
    IF v_got IS NULL THEN
        -- A concurrent transaction stored the id or the dedupe key first.
        IF p_key IS NOT NULL THEN
            PERFORM {schema}.give_slot_back(p_queue, p_key, v_state = 'blocked');
        END IF;
        RETURN QUERY SELECT 'duplicate'::text,
                            coalesce({schema}.holder_of(p_id, p_queue, p_dedupe_key), p_id),
                            0::bigint;
        RETURN;
    END IF;
    RETURN QUERY SELECT 'queued'::text, p_id, 0::bigint;
END $$;


-- The id of the job that already holds this id, or this dedupe key among the queue's
-- unfinished jobs; NULL if neither.
CREATE OR REPLACE FUNCTION {schema}.holder_of(p_id text, p_queue text, p_dedupe_key text)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT j.id FROM {schema}.jobs j WHERE j.id = p_id),
        (SELECT j.id FROM {schema}.jobs j
          WHERE p_dedupe_key IS NOT NULL AND j.queue = p_queue
            AND j.dedupe_key = p_dedupe_key
            AND j.state IN ('scheduled', 'queued', 'blocked', 'running', 'retrying')))
$$;


-- Lock the queue's anchor row (held to commit, so bounded enqueues of one queue take
-- turns) and return its pending depth: scheduled + queued + blocked + retrying.
CREATE OR REPLACE FUNCTION {schema}.lock_depth(p_queue text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_depth bigint;
BEGIN
    INSERT INTO {schema}.queues (queue) VALUES (p_queue) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM {schema}.queues WHERE queue = p_queue FOR UPDATE;
    SELECT coalesce(sum(s.n_scheduled + s.n_queued + s.n_blocked + s.n_retrying), 0)
      INTO v_depth
      FROM {schema}.stats s WHERE s.queue = p_queue;
    RETURN v_depth;
END $$;


-- Create (if missing) and lock the key rows of a batch in (queue, key) order, the one
-- order every function takes them in, so concurrent batches wait instead of deadlocking.
CREATE OR REPLACE FUNCTION {schema}.lock_keys(p_queues text[], p_keys text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.job_keys (queue, key)
    SELECT DISTINCT u.queue, u.key FROM unnest(p_queues, p_keys) AS u(queue, key)
     WHERE u.key IS NOT NULL
     ORDER BY u.queue, u.key
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM {schema}.job_keys k
     WHERE (k.queue, k.key) IN (SELECT u.queue, u.key FROM unnest(p_queues, p_keys) AS u(queue, key))
     ORDER BY k.queue, k.key
       FOR UPDATE;
END $$;


-- Take a slot of a key for a new job: returns p_placed if a slot was free (and no job of
-- the key waits already), else 'blocked'. Holds the key's row lock to commit.
CREATE OR REPLACE FUNCTION {schema}.take_slot(
    p_queue text, p_key text, p_limit int, p_placed text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_blocked boolean;
BEGIN
    INSERT INTO {schema}.job_keys (queue, key) VALUES (p_queue, p_key) ON CONFLICT DO NOTHING;
    UPDATE {schema}.job_keys k
       SET active = k.active + (k.active < p_limit AND k.blocked = 0)::int,
           blocked = k.blocked + (NOT (k.active < p_limit AND k.blocked = 0))::int
     WHERE k.queue = p_queue AND k.key = p_key
    RETURNING NOT (k.active <= p_limit AND k.blocked = 0) INTO v_blocked;
    -- RETURNING sees the new values: a placed job left active <= limit and blocked = 0.
    RETURN CASE WHEN v_blocked THEN 'blocked' ELSE p_placed END;
END $$;


-- Undo take_slot for a job that was not stored after all.
CREATE OR REPLACE FUNCTION {schema}.give_slot_back(p_queue text, p_key text, p_blocked boolean)
RETURNS void
LANGUAGE sql AS $$
    WITH k AS (
        UPDATE {schema}.job_keys k
           SET active = k.active - (NOT p_blocked)::int, blocked = k.blocked - p_blocked::int
         WHERE k.queue = p_queue AND k.key = p_key
        RETURNING k.queue, k.key, k.active, k.blocked
    )
    DELETE FROM {schema}.job_keys d USING k
     WHERE d.queue = k.queue AND d.key = k.key AND k.active <= 0 AND k.blocked <= 0;
$$;


-- Free the key slots of jobs that ended (held = true) or left the blocked line without
-- running (held = false), then move the oldest blocked jobs of each key into the free
-- slots. Keys are locked in (queue, key) order, the same order everywhere.
CREATE OR REPLACE FUNCTION {schema}.free_slots(
    p_queues text[], p_keys text[], p_held boolean[], p_now float8)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_active int;
    v_blocked int;
    v_next record;
BEGIN
    FOR r IN
        SELECT u.queue, u.key, count(*) FILTER (WHERE u.held) AS freed,
               count(*) FILTER (WHERE NOT u.held) AS left_line
        FROM unnest(p_queues, p_keys, p_held) AS u(queue, key, held)
        WHERE u.key IS NOT NULL
        GROUP BY u.queue, u.key
        ORDER BY u.queue, u.key
    LOOP
        UPDATE {schema}.job_keys k
           SET active = greatest(0, k.active - r.freed),
               blocked = greatest(0, k.blocked - r.left_line)
         WHERE k.queue = r.queue AND k.key = r.key
        RETURNING k.active, k.blocked INTO v_active, v_blocked;
        CONTINUE WHEN NOT FOUND;
        WHILE v_blocked > 0 LOOP
            SELECT j.id, j.key_limit INTO v_next
              FROM {schema}.jobs j
             WHERE j.queue = r.queue AND j.key = r.key AND j.state = 'blocked'
             ORDER BY j.seq LIMIT 1;
            EXIT WHEN NOT FOUND OR v_active >= v_next.key_limit;
            UPDATE {schema}.jobs j
               SET state = CASE WHEN j.run_at > p_now THEN 'scheduled' ELSE 'queued' END
             WHERE j.id = v_next.id;
            v_active := v_active + 1;
            v_blocked := v_blocked - 1;
        END LOOP;
        IF v_active <= 0 AND v_blocked <= 0 THEN
            DELETE FROM {schema}.job_keys k WHERE k.queue = r.queue AND k.key = r.key;
        ELSE
            UPDATE {schema}.job_keys k SET active = v_active, blocked = v_blocked
             WHERE k.queue = r.queue AND k.key = r.key;
        END IF;
    END LOOP;
END $$;
