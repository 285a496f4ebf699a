-- Topics: retained event logs fanned out to subscriber groups. A group's deliveries are
-- ordinary jobs (kind 'event') in the queue '<group>@<topic>', named after the topic,
-- with id '<event id>:<group><suffix>' and as job key the event's key for that group
-- (group_keys[group], else key), so per-key order holds inside each group.
--
-- Tables: {schema}.topics, {schema}.topic_groups, {schema}.events (sequence
--         {schema}.event_offsets), {schema}.jobs (through {schema}.enqueue).

-- {schema}.deliver(topic, group or NULL for all, offsets or NULL, from_offset, from_time,
--                  suffix, enqueued_at or NULL for each event's published_at, now)
--   Enqueues one delivery per (retained event, group) selected, events in offset order.
--   Returns how many events were selected.
CREATE OR REPLACE FUNCTION {schema}.deliver(
    p_topic text, p_group text, p_offsets bigint[], p_from_offset bigint,
    p_from_time float8, p_suffix text, p_enqueued_at float8, p_now float8)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_events int;
    a record;
BEGIN
    SELECT count(*) INTO v_events FROM {schema}.events e
     WHERE e.topic = p_topic
       AND (p_offsets IS NULL OR e."offset" = ANY (p_offsets))
       AND (p_from_offset IS NULL OR e."offset" >= p_from_offset)
       AND (p_from_time IS NULL OR e.published_at >= p_from_time);
    IF v_events = 0 THEN
        RETURN 0;
    END IF;
    SELECT array_agg(e.id || ':' || g.grp || p_suffix ORDER BY e."offset", g.grp) AS ids,
           array_agg(g.grp || '@' || p_topic ORDER BY e."offset", g.grp) AS queues,
           array_agg(e.payload ORDER BY e."offset", g.grp) AS payloads,
           array_agg(coalesce(p_enqueued_at, e.published_at) ORDER BY e."offset", g.grp) AS ats,
           array_agg(coalesce(e.group_keys ->> g.grp, e.key) ORDER BY e."offset", g.grp)
               AS keys,
           array_agg(g.max_attempts ORDER BY e."offset", g.grp) AS max_attempts,
           array_agg(g.max_recoveries ORDER BY e."offset", g.grp) AS max_recoveries,
           array_agg(g.result_ttl_s ORDER BY e."offset", g.grp) AS result_ttls,
           array_agg(g.dead_ttl_s ORDER BY e."offset", g.grp) AS dead_ttls,
           count(*) AS n
      INTO a
      FROM {schema}.events e
      JOIN {schema}.topic_groups g ON g.topic = e.topic
     WHERE e.topic = p_topic
       AND (p_group IS NULL OR g.grp = p_group)
       AND (p_offsets IS NULL OR e."offset" = ANY (p_offsets))
       AND (p_from_offset IS NULL OR e."offset" >= p_from_offset)
       AND (p_from_time IS NULL OR e.published_at >= p_from_time);
    IF a.n > 0 THEN
        PERFORM {schema}.enqueue(
            a.ids, a.queues, array_fill(p_topic, ARRAY[a.n::int]),
            array_fill('event'::text, ARRAY[a.n::int]), a.payloads, a.ats,
            array_fill(0, ARRAY[a.n::int]), array_fill(NULL::float8, ARRAY[a.n::int]),
            a.keys, array_fill(1, ARRAY[a.n::int]), array_fill(NULL::text, ARRAY[a.n::int]),
            a.max_attempts, a.max_recoveries, array_fill(NULL::int, ARRAY[a.n::int]),
            a.result_ttls, a.dead_ttls, p_now, false);
    END IF;
    RETURN v_events;
END $$;


-- {schema}.publish(topic, ids, payloads, keys, group_keys, published_ats, now) -> offsets
--   Appends the events to the topic's log (creating the topic with default retention if
--   new) and enqueues one delivery per registered group, in the caller's transaction.
CREATE OR REPLACE FUNCTION {schema}.publish(
    p_topic text, p_ids text[], p_payloads bytea[], p_keys text[], p_group_keys jsonb[],
    p_published_ats float8[], p_now float8)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_offsets bigint[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {schema}.topics t WHERE t.name = p_topic) THEN
        INSERT INTO {schema}.topics (name) VALUES (p_topic) ON CONFLICT DO NOTHING;
    END IF;
    WITH ins AS (
        INSERT INTO {schema}.events (
            topic, "offset", id, payload, key, group_keys, published_at)
        SELECT p_topic, nextval('{schema}.event_offsets'), u.id, u.payload, u.key,
               u.group_keys, u.at
          FROM unnest(p_ids, p_payloads, p_keys, p_group_keys, p_published_ats)
               WITH ORDINALITY AS u(id, payload, key, group_keys, at, ord)
         ORDER BY u.ord
        RETURNING "offset"
    )
    SELECT array_agg(ins."offset" ORDER BY ins."offset") INTO v_offsets FROM ins;
    IF EXISTS (SELECT 1 FROM {schema}.topic_groups g WHERE g.topic = p_topic) THEN
        PERFORM {schema}.deliver(p_topic, NULL, v_offsets, NULL, NULL, '', NULL, p_now);
    END IF;
    RETURN QUERY SELECT unnest(v_offsets);
END $$;


-- {schema}.ensure_topic(topic, retention_s, max_events, groups..., now)
--   Creates or updates the topic and its groups. A group that is new and from_start
--   receives the retained log (ids suffixed ':s'); otherwise it starts with the next event.
CREATE OR REPLACE FUNCTION {schema}.ensure_topic(
    p_topic text, p_retention_s float8, p_max_events bigint, p_groups text[],
    p_from_start boolean[], p_max_attempts int[], p_max_recoveries int[],
    p_result_ttls float8[], p_dead_ttls float8[], p_now float8)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    g record;
    v_new boolean;
BEGIN
    INSERT INTO {schema}.topics AS t (name, retention_s, max_events)
    VALUES (p_topic, p_retention_s, p_max_events)
    ON CONFLICT (name) DO UPDATE
        SET retention_s = excluded.retention_s, max_events = excluded.max_events;
    FOR g IN
        SELECT * FROM unnest(p_groups, p_from_start, p_max_attempts, p_max_recoveries,
                             p_result_ttls, p_dead_ttls)
                   AS u(grp, from_start, max_attempts, max_recoveries, result_ttl, dead_ttl)
    LOOP
        INSERT INTO {schema}.topic_groups AS t (
            topic, grp, from_start, max_attempts, max_recoveries, result_ttl_s, dead_ttl_s,
            created_at)
        VALUES (p_topic, g.grp, g.from_start, g.max_attempts, g.max_recoveries,
                g.result_ttl, g.dead_ttl, p_now)
        ON CONFLICT (topic, grp) DO UPDATE SET
            from_start = excluded.from_start, max_attempts = excluded.max_attempts,
            max_recoveries = excluded.max_recoveries, result_ttl_s = excluded.result_ttl_s,
            dead_ttl_s = excluded.dead_ttl_s
        RETURNING (xmax = 0) INTO v_new;
        IF v_new AND g.from_start THEN
            PERFORM {schema}.deliver(p_topic, g.grp, NULL, NULL, NULL, ':s', p_now, p_now);
        END IF;
    END LOOP;
END $$;


-- {schema}.replay(topic, group, from_offset, from_time, now) -> events delivered again
--   Each replay gets its own id suffix (':r<n>'), so replayed deliveries never collide
--   with earlier ones.
CREATE OR REPLACE FUNCTION {schema}.replay(
    p_topic text, p_group text, p_from_offset bigint, p_from_time float8, p_now float8)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_n int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {schema}.topic_groups g
                    WHERE g.topic = p_topic AND g.grp = p_group) THEN
        RETURN 0;
    END IF;
    UPDATE {schema}.topics t SET replays = t.replays + 1 WHERE t.name = p_topic
    RETURNING t.replays INTO v_n;
    RETURN {schema}.deliver(p_topic, p_group, NULL, p_from_offset, p_from_time,
                            ':r' || v_n, p_now, p_now);
END $$;
