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
-- A batch without bounds or repeated ids is one INSERT ... ON CONFLICT DO NOTHING (the
-- primary key and the partial unique dedupe index are its arbiters), with the slots of
-- keyed jobs planned in the same statement. Bounded requests and repeated ids go through
-- {schema}.enqueue_one per request, in order.

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
    v_keyed boolean;
    v_simple boolean;
    v_inserted text[];
    v_queues text[];
    v_keys text[];
    v_held boolean[];
BEGIN
    SELECT coalesce(bool_or(u.key IS NOT NULL), false),
           coalesce(bool_and(NOT p_bounded OR u.max_depth IS NULL), true)
               AND count(DISTINCT u.id) = count(u.id)
      INTO v_keyed, v_simple
      FROM unnest(p_ids, p_keys, p_max_depths) AS u(id, key, max_depth);
    IF NOT v_simple THEN
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

    IF v_keyed THEN
        PERFORM {schema}.lock_keys(p_queues, p_keys);
    END IF;
    -- Each job's state is planned in batch order: a keyed job takes a slot while its key
    -- has one free and nobody waits, and from its first blocked job on every later one of
    -- that key waits too (a running AND over the key's jobs). The key rows get the planned
    -- counts in the same statement; rows the insert skipped (an id or dedupe key already
    -- held) give theirs back below.
    WITH r AS (
        SELECT u.*, row_number() OVER (PARTITION BY u.queue, u.key ORDER BY u.ord) AS rn
          FROM unnest(p_ids, p_queues, p_names, p_kinds, p_payloads, p_enqueued_ats,
                      p_priorities, p_etas, p_keys, p_key_limits, p_dedupe_keys,
                      p_max_attempts, p_max_recoveries, p_result_ttls, p_dead_ttls)
               WITH ORDINALITY
               AS u(id, queue, name, kind, payload, enqueued_at, priority, eta, key,
                    key_limit, dedupe_key, max_attempts, max_recoveries, result_ttl,
                    dead_ttl, ord)
         WHERE u.id IS NOT NULL
    ), planned AS (
        SELECT r.*, coalesce(r.eta, r.enqueued_at) AS run_at,
               CASE WHEN r.key IS NOT NULL AND NOT bool_and(
                        coalesce(k.blocked = 0 AND k.active + r.rn - 1 < greatest(1, r.key_limit),
                                 false))
                        OVER (PARTITION BY r.queue, r.key ORDER BY r.ord)
                    THEN 'blocked'
                    WHEN coalesce(r.eta, r.enqueued_at) > p_now THEN 'scheduled'
                    ELSE 'queued' END AS state
          FROM r
          LEFT JOIN {schema}.job_keys k
                 ON v_keyed AND k.queue = r.queue AND k.key = r.key
                AND k.queue = ANY (p_queues) AND k.key = ANY (p_keys)
    ), ins AS (
        INSERT INTO {schema}.jobs (
            id, queue, name, kind, state, payload, priority, key, key_limit, dedupe_key,
            max_attempts, max_recoveries, result_ttl_s, dead_ttl_s,
            enqueued_at, run_at, due_at)
        SELECT p.id, p.queue, p.name, p.kind, p.state, p.payload, p.priority, p.key,
               greatest(1, p.key_limit), p.dedupe_key, p.max_attempts, p.max_recoveries,
               p.result_ttl, p.dead_ttl, p.enqueued_at, p.run_at,
               greatest(p.run_at, p.enqueued_at)
          FROM planned p
         ORDER BY p.ord
        ON CONFLICT DO NOTHING
        RETURNING id
    ), taken AS (
        UPDATE {schema}.job_keys k
           SET active = k.active + c.placed, blocked = k.blocked + c.waiting,
               lim = greatest(k.lim, c.lim)
          FROM (SELECT p.queue, p.key, count(*) FILTER (WHERE p.state <> 'blocked') AS placed,
                       count(*) FILTER (WHERE p.state = 'blocked') AS waiting,
                       max(greatest(1, p.key_limit)) AS lim
                  FROM planned p WHERE p.key IS NOT NULL
                 GROUP BY p.queue, p.key) c
         WHERE k.queue = c.queue AND k.key = c.key
           AND k.queue = ANY (p_queues) AND k.key = ANY (p_keys)
    ), skipped AS (
        SELECT p.queue, p.key, p.state FROM planned p
          LEFT JOIN ins i ON i.id = p.id
         WHERE i.id IS NULL AND p.key IS NOT NULL
    )
    SELECT (SELECT array_agg(ins.id) FROM ins),
           (SELECT array_agg(x.queue) FROM skipped x),
           (SELECT array_agg(x.key) FROM skipped x),
           (SELECT array_agg(x.state <> 'blocked') FROM skipped x)
      INTO v_inserted, v_queues, v_keys, v_held;
    IF v_keys IS NOT NULL THEN
        PERFORM {schema}.free_slots(v_queues, v_keys, v_held, p_now);
    END IF;

    RETURN QUERY
    SELECT CASE WHEN i.id IS NOT NULL THEN 'queued' ELSE 'duplicate' END,
           CASE WHEN i.id IS NOT NULL THEN r.id
                ELSE coalesce({schema}.holder_of(r.id, r.queue, r.dedupe_key), r.id)
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
     WHERE k.queue = ANY (p_queues) AND k.key = ANY (p_keys)  -- probes of the primary key
       AND (k.queue, k.key) IN (SELECT u.queue, u.key FROM unnest(p_queues, p_keys) AS u(queue, key))
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
           blocked = k.blocked + (NOT (k.active < p_limit AND k.blocked = 0))::int,
           lim = greatest(k.lim, p_limit)
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
-- slots: in line order, each while the key's active jobs stay under its own key_limit
-- (a running AND, as the reference broker walks the line), reading at most
-- lim - active of them per key. Keys are locked in (queue, key) order, the same order
-- everywhere. Key rows are read through `queue = ANY(..) AND key = ANY(..)`: primary-key
-- probes, whatever the planner estimates for the small sets it joins them with.
CREATE OR REPLACE FUNCTION {schema}.free_slots(
    p_queues text[], p_keys text[], p_held boolean[], p_now float8)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_queues text[];
    v_keys text[];
    v_active int[];
    v_blocked int[];
    v_lim int[];
BEGIN
    SELECT array_agg(x.queue), array_agg(x.key), array_agg(x.active), array_agg(x.blocked),
           array_agg(x.lim)
      INTO v_queues, v_keys, v_active, v_blocked, v_lim
      FROM (SELECT k.queue, k.key, greatest(0, k.active - c.freed) AS active,
                   greatest(0, k.blocked - c.left_line) AS blocked, k.lim
              FROM {schema}.job_keys k
              JOIN (SELECT u.queue, u.key, count(*) FILTER (WHERE u.held) AS freed,
                           count(*) FILTER (WHERE NOT u.held) AS left_line
                      FROM unnest(p_queues, p_keys, p_held) AS u(queue, key, held)
                     WHERE u.key IS NOT NULL
                     GROUP BY u.queue, u.key) c ON c.queue = k.queue AND c.key = k.key
             WHERE k.queue = ANY (p_queues) AND k.key = ANY (p_keys)
             ORDER BY k.queue, k.key
               FOR UPDATE OF k) x;
    IF v_keys IS NULL THEN
        RETURN;
    END IF;

    WITH line AS (
        SELECT l.queue, l.key, l.active, l.blocked, w.tid,
               bool_and(w.tid IS NULL OR l.active + w.rn - 1 < w.key_limit)
                   OVER (PARTITION BY l.queue, l.key ORDER BY w.rn) AS ok
          FROM unnest(v_queues, v_keys, v_active, v_blocked, v_lim)
               AS l(queue, key, active, blocked, lim)
          LEFT JOIN LATERAL (
            SELECT j.ctid AS tid, j.key_limit, row_number() OVER (ORDER BY j.seq) AS rn
              FROM {schema}.jobs j
             WHERE j.queue = l.queue AND j.key = l.key AND j.state = 'blocked'
             ORDER BY j.seq
             LIMIT greatest(0, least(l.blocked, l.lim - l.active))) w ON true
    ), moved AS (
        UPDATE {schema}.jobs j
           SET state = CASE WHEN j.run_at > p_now THEN 'scheduled' ELSE 'queued' END
         WHERE j.ctid = ANY (ARRAY(SELECT line.tid FROM line WHERE line.ok AND line.tid IS NOT NULL))
    )
    SELECT array_agg(y.queue), array_agg(y.key), array_agg(y.active + y.moved),
           array_agg(y.blocked - y.moved)
      INTO v_queues, v_keys, v_active, v_blocked
      FROM (SELECT line.queue, line.key, line.active, line.blocked,
                   count(line.tid) FILTER (WHERE line.ok)::int AS moved
              FROM line GROUP BY line.queue, line.key, line.active, line.blocked) y;

    UPDATE {schema}.job_keys k SET active = u.active, blocked = u.blocked
      FROM unnest(v_queues, v_keys, v_active, v_blocked) AS u(queue, key, active, blocked)
     WHERE k.queue = u.queue AND k.key = u.key
       AND k.queue = ANY (v_queues) AND k.key = ANY (v_keys);
    DELETE FROM {schema}.job_keys k
     WHERE k.queue = ANY (v_queues) AND k.key = ANY (v_keys)
       AND k.active <= 0 AND k.blocked <= 0
       AND (k.queue, k.key) IN (SELECT u.queue, u.key FROM unnest(v_queues, v_keys) AS u(queue, key));
END $$;
