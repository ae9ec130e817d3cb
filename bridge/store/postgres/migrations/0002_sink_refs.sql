-- A sink's own references (bridge/store/base.py SinkRef): the Jira sink's item/group -> ticket
-- mapping and its create intents (the SQLite store's migration 0005).
CREATE TABLE sink_refs (
    sink        text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    state       text COLLATE "C" NOT NULL,
    value       text NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (sink, key)
);
CREATE INDEX sink_refs_state ON sink_refs (sink, state);
