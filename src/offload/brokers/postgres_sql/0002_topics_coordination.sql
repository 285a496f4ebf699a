-- Migration 0002: topics (retained event logs and their subscriber groups) and the
-- coordination primitives (named leases, token buckets, key-value, worker registry).
--
-- Tables created: {schema}.topics, {schema}.topic_groups, {schema}.events,
--                 {schema}.named_leases, {schema}.buckets, {schema}.kv, {schema}.workers
-- Sequences created: {schema}.event_offsets

CREATE TABLE {schema}.topics (
    name        text COLLATE "C" PRIMARY KEY,
    retention_s float8 DEFAULT 604800,
    max_events  bigint,
    replays     int NOT NULL DEFAULT 0
);

CREATE TABLE {schema}.topic_groups (
    topic          text COLLATE "C" NOT NULL,
    grp            text COLLATE "C" NOT NULL,
    from_start     boolean NOT NULL DEFAULT false,
    max_attempts   int NOT NULL DEFAULT 1,
    max_recoveries int NOT NULL DEFAULT 3,
    result_ttl_s   float8 NOT NULL DEFAULT 3600,
    dead_ttl_s     float8 NOT NULL DEFAULT 604800,
    created_at     float8 NOT NULL,
    PRIMARY KEY (topic, grp)
);

-- Offsets come from one sequence: increasing per topic in publish order, never reused,
-- and taken without locking the topic, so a long transaction that publishes (the outbox
-- pattern) never holds other publishers back.
CREATE SEQUENCE {schema}.event_offsets AS bigint MINVALUE 0 START 0;

CREATE TABLE {schema}.events (
    topic        text COLLATE "C" NOT NULL,
    "offset"     bigint NOT NULL,
    id           text NOT NULL,
    payload      bytea NOT NULL,
    key          text,
    group_keys   jsonb,  -- {"<group>": "<key>"}: a group's own key for this event
    published_at float8 NOT NULL,
    PRIMARY KEY (topic, "offset")
);
CREATE INDEX events_published ON {schema}.events (topic, published_at);

CREATE TABLE {schema}.named_leases (
    name       text COLLATE "C" PRIMARY KEY,
    owner      text NOT NULL,
    expires_at float8 NOT NULL
);

CREATE TABLE {schema}.buckets (
    name   text COLLATE "C" PRIMARY KEY,
    tokens float8 NOT NULL,
    at     float8 NOT NULL,
    rate   float8 NOT NULL,
    burst  float8 NOT NULL
);

CREATE TABLE {schema}.kv (
    key        text COLLATE "C" PRIMARY KEY,
    value      bytea NOT NULL,
    expires_at float8
);
CREATE INDEX kv_expiring ON {schema}.kv (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE {schema}.workers (
    id         text COLLATE "C" PRIMARY KEY,
    info       bytea NOT NULL,
    last_seen  float8 NOT NULL,
    expires_at float8 NOT NULL
);
