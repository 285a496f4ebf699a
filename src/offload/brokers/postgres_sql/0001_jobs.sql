-- Migration 0001: jobs, their key slots, per-queue anchors and the stats they roll up into.
--
-- Tables created: {schema}.schema_version, {schema}.jobs, {schema}.job_keys,
--                 {schema}.queues, {schema}.stats, {schema}.result_waits
--
-- Every instant is a float8 of Unix seconds from the broker's injected clock (never now()).
-- Names and ids compare bytewise (COLLATE "C"): cheaper index work, and the same order
-- whatever the database's locale.
-- Indexes on jobs are partial per state, so each hot query walks only the rows it can use:
-- claims see only queued rows, promotion only delayed ones, recovery only running ones.

CREATE TABLE {schema}.schema_version (
    version       int PRIMARY KEY,
    name          text NOT NULL,
    applied_at    float8 NOT NULL,
    functions_sha text
);

CREATE TABLE {schema}.jobs (
    id               text COLLATE "C" PRIMARY KEY,
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    queue            text COLLATE "C" NOT NULL,
    name             text COLLATE "C" NOT NULL,
    kind             text NOT NULL DEFAULT 'job' CHECK (kind IN ('job', 'event')),
    state            text NOT NULL CHECK (state IN ('scheduled', 'queued', 'blocked', 'running',
                                                    'retrying', 'succeeded', 'dead', 'cancelled')),
    payload          bytea NOT NULL,
    priority         int NOT NULL DEFAULT 0,
    key              text COLLATE "C",
    key_limit        int NOT NULL DEFAULT 1,
    dedupe_key       text COLLATE "C",
    attempts         int NOT NULL DEFAULT 0,
    max_attempts     int NOT NULL DEFAULT 1,
    recoveries       int NOT NULL DEFAULT 0,
    max_recoveries   int NOT NULL DEFAULT 3,
    result_ttl_s     float8 NOT NULL,
    dead_ttl_s       float8 NOT NULL,
    enqueued_at      float8 NOT NULL,
    run_at           float8 NOT NULL,
    due_at           float8 NOT NULL,
    waited           boolean NOT NULL DEFAULT false,
    started_at       float8,
    finished_at      float8,
    expires_at       float8,
    service_s        float8 NOT NULL DEFAULT 0,
    result           bytea,
    errors           jsonb NOT NULL DEFAULT '[]',
    progress         float8,
    progress_message text,
    cancel_requested boolean NOT NULL DEFAULT false,
    worker_id        text,
    lease_token      bigint,
    lease_expires    float8
);

-- A queue table churns: every job is inserted, updated twice and deleted. Vacuum it
-- early, or claims wade through dead index entries at the head of jobs_ready.
ALTER TABLE {schema}.jobs SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);

-- Newest-first listings and their cursor.
CREATE UNIQUE INDEX jobs_seq ON {schema}.jobs (seq);
-- The claim: priority first, then due time, then enqueue order.
CREATE INDEX jobs_ready ON {schema}.jobs (queue, priority DESC, run_at, seq)
    WHERE state = 'queued';
-- Promotion of delayed jobs that came due.
CREATE INDEX jobs_delayed ON {schema}.jobs (queue, run_at)
    WHERE state IN ('scheduled', 'retrying');
-- The age of the oldest waiting job (stats).
CREATE INDEX jobs_pending_age ON {schema}.jobs (queue, enqueued_at)
    WHERE state IN ('scheduled', 'queued', 'blocked', 'retrying');
-- Jobs waiting for a slot of their key, in enqueue order.
CREATE INDEX jobs_blocked ON {schema}.jobs (queue, key, seq)
    WHERE state = 'blocked';
-- Recovery of expired leases.
CREATE INDEX jobs_leases ON {schema}.jobs (lease_expires)
    WHERE state = 'running';
-- Pruning of final jobs past their TTL.
CREATE INDEX jobs_expiring ON {schema}.jobs (expires_at)
    WHERE state IN ('succeeded', 'dead', 'cancelled');
-- Timings of finished jobs (percentiles).
CREATE INDEX jobs_finished ON {schema}.jobs (queue, finished_at)
    WHERE state IN ('succeeded', 'dead');
-- A dedupe key is unique among the queue's unfinished jobs.
CREATE UNIQUE INDEX jobs_dedupe ON {schema}.jobs (queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL
      AND state IN ('scheduled', 'queued', 'blocked', 'running', 'retrying');

-- Slots of a key: how many of its jobs hold one (active), how many wait (blocked), and
-- the largest key_limit among them (lim: how many could ever run at once). A row exists
-- only while the key has unfinished jobs.
CREATE TABLE {schema}.job_keys (
    queue   text COLLATE "C" NOT NULL,
    key     text COLLATE "C" NOT NULL,
    active  int NOT NULL DEFAULT 0,
    blocked int NOT NULL DEFAULT 0,
    lim     int NOT NULL DEFAULT 1,
    PRIMARY KEY (queue, key)
);

-- One row per queue that was ever bounded: locked by bounded enqueues so the depth check
-- and the insert are one atomic step.
CREATE TABLE {schema}.queues (
    queue text COLLATE "C" PRIMARY KEY
);

-- State counts (n_*) and cumulative Little's-Law counters per queue and task name, kept
-- by the statement triggers on jobs. Each backend writes its own shard row so concurrent
-- transactions do not queue up behind one hot row; readers sum the shards.
CREATE TABLE {schema}.stats (
    queue           text COLLATE "C" NOT NULL,
    name            text COLLATE "C" NOT NULL,
    shard           int NOT NULL,
    n_scheduled     bigint NOT NULL DEFAULT 0,
    n_queued        bigint NOT NULL DEFAULT 0,
    n_blocked       bigint NOT NULL DEFAULT 0,
    n_running       bigint NOT NULL DEFAULT 0,
    n_retrying      bigint NOT NULL DEFAULT 0,
    n_succeeded     bigint NOT NULL DEFAULT 0,
    n_dead          bigint NOT NULL DEFAULT 0,
    n_cancelled     bigint NOT NULL DEFAULT 0,
    enqueued        bigint NOT NULL DEFAULT 0,
    started         bigint NOT NULL DEFAULT 0,
    waited          bigint NOT NULL DEFAULT 0,
    succeeded       bigint NOT NULL DEFAULT 0,
    dead            bigint NOT NULL DEFAULT 0,
    cancelled       bigint NOT NULL DEFAULT 0,
    retried         bigint NOT NULL DEFAULT 0,
    recovered       bigint NOT NULL DEFAULT 0,
    wait_s          float8 NOT NULL DEFAULT 0,
    service_s       float8 NOT NULL DEFAULT 0,
    system_s        float8 NOT NULL DEFAULT 0,
    in_system       bigint NOT NULL DEFAULT 0,
    in_system_enq_s float8 NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, name, shard)
) WITH (fillfactor = 50);  -- room on the page for HOT updates of these hot rows

-- Queues whose results someone awaits (wait_job), until when. Jobs ending in a queue
-- notify 'd:<queue>' only while such a row is current, so settling costs no NOTIFY
-- (which serialises commits database-wide) when nobody is listening for results.
CREATE TABLE {schema}.result_waits (
    queue text COLLATE "C" PRIMARY KEY,
    until float8 NOT NULL
);
