-- Each outbox row and dead letter carries its event body; the shared `events` table goes.
-- Delivering then reads one row per event (no join) and forgetting a delivered event is one
-- delete by sequence, instead of a later sweep over a table keyed by random event ids, which
-- cost more than everything else on the delivery path. A body routed to several sinks is
-- stored once per sink.

CREATE TABLE outbox_v2 (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    sink       TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    body       TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL
);
INSERT INTO outbox_v2 (seq, sink, event_id, body, attempts, last_error, created_at)
    SELECT o.seq, o.sink, o.event_id, e.body, o.attempts, o.last_error, o.created_at
    FROM outbox o JOIN events e ON e.id = o.event_id;

CREATE TABLE dead_letters_v2 (
    seq        INTEGER PRIMARY KEY,
    sink       TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    body       TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    error      TEXT NOT NULL,
    failed_at  REAL NOT NULL
);
INSERT INTO dead_letters_v2 (seq, sink, event_id, body, attempts, error, failed_at)
    SELECT d.seq, d.sink, d.event_id, e.body, d.attempts, d.error, d.failed_at
    FROM dead_letters d JOIN events e ON e.id = d.event_id;

-- Sequence numbers are never reused (dead letters keep theirs): carry the counter over.
UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT IFNULL(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'outbox'))
    WHERE name = 'outbox_v2';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'outbox_v2', seq FROM sqlite_sequence WHERE name = 'outbox'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox_v2');

DROP TABLE dead_letters;
DROP TABLE outbox;
DROP TABLE events;
ALTER TABLE outbox_v2 RENAME TO outbox;
ALTER TABLE dead_letters_v2 RENAME TO dead_letters;
CREATE INDEX outbox_sink ON outbox (sink, seq);
CREATE INDEX dead_letters_sink ON dead_letters (sink, seq);
