-- Silences (bridge/silences.py): who muted what, why and until when. `matchers` is JSON in the
-- routes' matcher syntax; `settled_at` is set once the items a silence muted and that are
-- still active have been delivered as they stand (after it ended), in that same transaction.
CREATE TABLE silences (
    id          TEXT PRIMARY KEY,
    matchers    TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    ends_at     TEXT NOT NULL,
    author      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    origin      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expired_at  TEXT,
    settled_at  TEXT
);
CREATE INDEX silences_unsettled ON silences (ends_at) WHERE settled_at IS NULL;
