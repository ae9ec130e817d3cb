-- Several replicas sharing the work (bridge/store/postgres/leases.py): one lease row per work
-- unit (a source scope, a sink), owned by one replica until `expires_at` (the database's
-- clock, never a replica's). Every acquisition draws a new fencing token; a commit checks,
-- inside its own transaction, that the lease it was started under still holds that token.
CREATE SEQUENCE fencing_tokens;

CREATE TABLE leases (
    unit        text COLLATE "C" PRIMARY KEY,
    owner       text COLLATE "C",
    token       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity',
    acquired_at timestamptz
);
CREATE INDEX leases_owner ON leases (owner);

-- Replicas alive recently (a heartbeat per renewal): how many share the units.
CREATE TABLE replicas (
    id         text COLLATE "C" PRIMARY KEY,
    started_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL
);
