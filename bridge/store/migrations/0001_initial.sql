-- Item state per scope; tracked/snapshot are JSON text written only on transitions.
-- Rowid tables with a unique index, not WITHOUT ROWID: rows carry ~1 KB snapshots, and
-- SQLite's WITHOUT ROWID b-trees slow down badly with rows that large.
CREATE TABLE items (
    scope       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('active', 'resolved')),
    tracked     TEXT NOT NULL,
    counter     INTEGER NOT NULL,
    misses      INTEGER NOT NULL DEFAULT 0,
    first_seen  TEXT NOT NULL,
    changed_at  TEXT NOT NULL,
    resolved_at TEXT,
    snapshot    TEXT NOT NULL,
    UNIQUE (scope, kind, key)
);

CREATE TABLE sweeps (
    id          INTEGER PRIMARY KEY,
    scope       TEXT NOT NULL,
    source      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    items_seen  INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    requests    INTEGER NOT NULL,
    notes       TEXT NOT NULL,
    error       TEXT
);
CREATE INDEX sweeps_scope ON sweeps (scope, id);

CREATE TABLE cursors (
    scope TEXT NOT NULL,
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;

-- Event bodies, shared by the outbox rows of every sink they go to.
CREATE TABLE events (
    id         TEXT NOT NULL UNIQUE,
    body       TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    sink       TEXT NOT NULL,
    event_id   TEXT NOT NULL REFERENCES events (id),
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX outbox_sink ON outbox (sink, seq);
CREATE INDEX outbox_event ON outbox (event_id);

CREATE TABLE dead_letters (
    seq        INTEGER PRIMARY KEY,
    sink       TEXT NOT NULL,
    event_id   TEXT NOT NULL REFERENCES events (id),
    attempts   INTEGER NOT NULL,
    error      TEXT NOT NULL,
    failed_at  REAL NOT NULL
);
CREATE INDEX dead_letters_sink ON dead_letters (sink, seq);
CREATE INDEX dead_letters_event ON dead_letters (event_id);
