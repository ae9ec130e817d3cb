-- The PostgreSQL schema, the same tables as the SQLite store's (bridge/store/migrations) in one
-- step. Identifiers and keys compare byte-wise (COLLATE "C"), as SQLite's do, so listings sort
-- the same on both. Times are timestamptz; event bodies, snapshots and tracked fields are the
-- exact JSON text the daemon wrote (text, not jsonb: they round-trip byte for byte).

CREATE TABLE items (
    scope       text COLLATE "C" NOT NULL,
    kind        text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    state       text NOT NULL CHECK (state IN ('active', 'resolved')),
    tracked     text NOT NULL,
    counter     bigint NOT NULL,
    misses      bigint NOT NULL DEFAULT 0,
    first_seen  timestamptz NOT NULL,
    changed_at  timestamptz NOT NULL,
    resolved_at timestamptz,
    snapshot    text NOT NULL,
    -- The severity the snapshot holds (bridge.store.base.snapshot_severity), for filtering.
    severity    text COLLATE "C" NOT NULL DEFAULT '',
    PRIMARY KEY (scope, kind, key)
);
CREATE INDEX items_changed ON items (changed_at DESC);

CREATE TABLE sweeps (
    id          bigserial PRIMARY KEY,
    scope       text COLLATE "C" NOT NULL,
    source      text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    outcome     text NOT NULL,
    items_seen  bigint NOT NULL,
    events      bigint NOT NULL,
    requests    bigint NOT NULL,
    notes       text NOT NULL,
    error       text
);
CREATE INDEX sweeps_scope ON sweeps (scope, id);

CREATE TABLE cursors (
    scope text COLLATE "C" NOT NULL,
    name  text COLLATE "C" NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (scope, name)
);

-- `seq` is drawn only under the outbox order lock (bridge/store/postgres/store.py), held until
-- the drawing transaction commits: sequence order is commit order.
CREATE TABLE outbox (
    seq        bigserial PRIMARY KEY,
    sink       text COLLATE "C" NOT NULL,
    event_id   text NOT NULL,
    body       text NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    last_error text,
    created_at timestamptz NOT NULL
);
CREATE INDEX outbox_sink ON outbox (sink, seq);

CREATE TABLE dead_letters (
    seq        bigint PRIMARY KEY,
    sink       text COLLATE "C" NOT NULL,
    event_id   text NOT NULL,
    body       text NOT NULL,
    attempts   integer NOT NULL,
    error      text NOT NULL,
    failed_at  timestamptz NOT NULL
);
CREATE INDEX dead_letters_sink ON dead_letters (sink, seq);

CREATE TABLE muted (
    seq         bigserial PRIMARY KEY,
    event_id    text NOT NULL,
    type        text NOT NULL,
    source      text NOT NULL,
    vendor      text NOT NULL,
    scope       text COLLATE "C" NOT NULL,
    kind        text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    title       text NOT NULL,
    severity    text COLLATE "C" NOT NULL,
    occurred_at timestamptz NOT NULL,
    sink        text COLLATE "C" NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('baseline:summary', 'baseline:suppress', 'silence')),
    silence_id  text,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX muted_scope ON muted (scope, reason);
CREATE INDEX muted_silence ON muted (silence_id) WHERE silence_id IS NOT NULL;
CREATE INDEX muted_recorded ON muted (recorded_at);

CREATE TABLE silences (
    id          text COLLATE "C" PRIMARY KEY,
    matchers    text NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    author      text NOT NULL,
    reason      text NOT NULL,
    origin      text NOT NULL,
    created_at  timestamptz NOT NULL,
    expired_at  timestamptz,
    settled_at  timestamptz
);
CREATE INDEX silences_unsettled ON silences (ends_at) WHERE settled_at IS NULL;
