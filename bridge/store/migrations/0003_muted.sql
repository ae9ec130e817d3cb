-- Events a sink was not sent (a first-sweep baseline, a silence), one row per event and sink,
-- kept in brief: the audit trail that says why, and what a silence re-notifies on expiry.
CREATE TABLE muted (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL,
    type        TEXT NOT NULL,
    source      TEXT NOT NULL,
    vendor      TEXT NOT NULL,
    scope       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    title       TEXT NOT NULL,
    severity    TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    sink        TEXT NOT NULL,
    reason      TEXT NOT NULL CHECK (reason IN ('baseline:summary', 'baseline:suppress', 'silence')),
    silence_id  TEXT,
    recorded_at REAL NOT NULL
);
CREATE INDEX muted_scope ON muted (scope, reason);
CREATE INDEX muted_silence ON muted (silence_id) WHERE silence_id IS NOT NULL;
CREATE INDEX muted_recorded ON muted (recorded_at);
