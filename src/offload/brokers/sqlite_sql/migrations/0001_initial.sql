-- offload SQLite schema, version 1: the whole store in one file.
--
-- Tables:
--   jobs          every job and event delivery, with its state, lease and result
--   stats         per (queue, task): live state counts and cumulative Little's-Law counters,
--                 updated in the same transaction as every state change (never by a scan)
--   topics        a topic's retention and its next log offset
--   topic_groups  the subscriber groups of each topic
--   events        the retained log of each topic
--   named_leases  coordination leases (scheduler, singletons)
--   buckets       token buckets (rate limits)
--   kv            a small key-value store with expiry
--   workers       the live worker registry
--
-- Instants are Unix seconds (REAL) from the broker's injected clock, never SQLite's own.

CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY,  -- arrival order: FIFO tie-break, listing cursor
    id_hash          INTEGER NOT NULL,     -- crc32 of id (see jobs_id below)
    id               TEXT    NOT NULL,     -- unique: checked by enqueue in its transaction
    queue            TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    run_at           REAL    NOT NULL,     -- due time; orders claims within a priority
    name             TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    enqueued_at      REAL    NOT NULL,
    due_at           REAL    NOT NULL,     -- first due time, for the wait-time counter
    key              TEXT,
    key_limit        INTEGER NOT NULL,
    dedupe_key       TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    recoveries       INTEGER NOT NULL DEFAULT 0,
    max_recoveries   INTEGER NOT NULL,
    claims           INTEGER NOT NULL DEFAULT 0,  -- claims ever made, never reset
    claims_base      INTEGER NOT NULL DEFAULT 0,  -- claims when last (re)queued: the first
                                                  -- claim after it ends the first wait
    result_ttl_s     REAL    NOT NULL,
    dead_ttl_s       REAL    NOT NULL,
    lease_token      INTEGER,              -- (seq << 20) | (claims & 0xFFFFF): see claim
    lease_expires    REAL,
    worker_id        TEXT,
    started_at       REAL,
    finished_at      REAL,
    expires_at       REAL,                 -- set when final: prune deletes the row after it
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         REAL,
    progress_message TEXT,
    errors           TEXT,                 -- JSON list of ErrorRecord, NULL when empty
    result           BLOB,
    payload          BLOB    NOT NULL      -- opaque; never read by SQL
);

-- Lookups by id go through a hash: producers pick random ids (uuid4), so an index on
-- the text itself is large and every insert dirties a different page of it, which
-- doubles the WAL written per enqueue. A 4-byte key (crc32) keeps the index small; every
-- lookup also compares the id, so collisions cost a row read, never a wrong answer.
CREATE INDEX jobs_id ON jobs (id_hash);
-- Claimable jobs of a queue in claim order. Partial: holds queued jobs only, so a claim is
-- a short index walk however many jobs are scheduled, running or finished.
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, seq) WHERE state = 'queued';
-- Delayed jobs by due time, so promotion reads only the due ones.
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_retrying ON jobs (run_at) WHERE state = 'retrying';
-- Running jobs by lease expiry, for recover_expired.
CREATE INDEX jobs_leases ON jobs (lease_expires) WHERE state = 'running';
-- Final jobs by expiry, for prune.
CREATE INDEX jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
-- Jobs with a key: slots in use and the blocked line, in arrival order.
CREATE INDEX jobs_keyed ON jobs (queue, key, state, seq) WHERE key IS NOT NULL;
-- A dedupe key is unique among the queue's unfinished jobs.
-- (Partial-index conditions are written with OR, never IN: SQLite evaluates them for every
-- row written, and an IN list there costs an insert a quarter of its time.)
CREATE UNIQUE INDEX jobs_dedupe ON jobs (queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL
      AND (state = 'scheduled' OR state = 'queued' OR state = 'blocked'
           OR state = 'running' OR state = 'retrying');
-- Listings newest first. Written once per job (queue and seq never change, save on
-- requeue): an index on (queue, state) would be rewritten on every state change, which
-- costs a claim and an ack a fifth of their time.
CREATE INDEX jobs_queue ON jobs (queue, seq);
-- The rare states a listing must find among many finished jobs: dead letters,
-- cancellations and the blocked line.
CREATE INDEX jobs_rare ON jobs (queue, state, seq)
    WHERE state = 'dead' OR state = 'cancelled' OR state = 'blocked';
-- Finished jobs by finish time, for timings.
CREATE INDEX jobs_finished ON jobs (queue, finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE stats (
    queue           TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    -- jobs in each state now
    n_scheduled     INTEGER NOT NULL DEFAULT 0,
    n_queued        INTEGER NOT NULL DEFAULT 0,
    n_blocked       INTEGER NOT NULL DEFAULT 0,
    n_running       INTEGER NOT NULL DEFAULT 0,
    n_retrying      INTEGER NOT NULL DEFAULT 0,
    n_succeeded     INTEGER NOT NULL DEFAULT 0,
    n_dead          INTEGER NOT NULL DEFAULT 0,
    n_cancelled     INTEGER NOT NULL DEFAULT 0,
    -- cumulative counters (offload.brokers.base.Counters)
    enqueued        INTEGER NOT NULL DEFAULT 0,
    started         INTEGER NOT NULL DEFAULT 0,
    waited          INTEGER NOT NULL DEFAULT 0,
    succeeded       INTEGER NOT NULL DEFAULT 0,
    dead            INTEGER NOT NULL DEFAULT 0,
    cancelled       INTEGER NOT NULL DEFAULT 0,
    retried         INTEGER NOT NULL DEFAULT 0,
    recovered       INTEGER NOT NULL DEFAULT 0,
    wait_s          REAL    NOT NULL DEFAULT 0,
    service_s       REAL    NOT NULL DEFAULT 0,
    system_s        REAL    NOT NULL DEFAULT 0,
    in_system       INTEGER NOT NULL DEFAULT 0,
    in_system_enq_s REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, name)
) WITHOUT ROWID;

CREATE TABLE topics (
    name        TEXT    PRIMARY KEY,
    retention_s REAL,
    max_events  INTEGER,
    next_pos    INTEGER NOT NULL DEFAULT 0,
    replays     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE topic_groups (
    topic          TEXT    NOT NULL,
    grp            TEXT    NOT NULL,
    from_start     INTEGER NOT NULL,
    max_attempts   INTEGER NOT NULL,
    max_recoveries INTEGER NOT NULL,
    result_ttl_s   REAL    NOT NULL,
    dead_ttl_s     REAL    NOT NULL,
    created_at     REAL    NOT NULL,
    UNIQUE (topic, grp)
);

CREATE TABLE events (
    topic        TEXT    NOT NULL,
    pos          INTEGER NOT NULL,  -- the event's offset in its topic
    id           TEXT    NOT NULL,
    published_at REAL    NOT NULL,
    key          TEXT,
    group_keys   TEXT,              -- JSON object group -> key overriding key, NULL if none
    payload      BLOB    NOT NULL,
    UNIQUE (topic, pos)
);

CREATE TABLE named_leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE buckets (
    name   TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    at     REAL NOT NULL,
    wait   REAL NOT NULL DEFAULT 0  -- the answer of the last take: 0 or seconds to wait
) WITHOUT ROWID;

CREATE TABLE kv (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    expires_at REAL
);

CREATE TABLE workers (
    id         TEXT PRIMARY KEY,
    info       BLOB NOT NULL,  -- WorkerInfo as JSON
    expires_at REAL NOT NULL
);
