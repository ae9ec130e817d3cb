-- A sink's own references (bridge/store/base.py SinkRef): the Jira sink's item/group → ticket
-- mapping and its create intents, written before and after `POST /issue`, so a crash between
-- Jira's create and our commit is resolved by a label search instead of a second ticket.
CREATE TABLE sink_refs (
    sink        TEXT NOT NULL,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (sink, key)
);
CREATE INDEX sink_refs_state ON sink_refs (sink, state);
