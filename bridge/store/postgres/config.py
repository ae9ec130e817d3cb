"""`state: {backend: postgres}`: the PostgreSQL store's settings. Kept apart from the store
(bridge/store/postgres/store.py) so that reading a config does not import the database
driver: only a process that opens the store pays for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator

from bridge.components import SecretFields
from bridge.net import is_loopback
from bridge.store.base import StateConfig

if TYPE_CHECKING:
    from bridge.store.postgres.store import PostgresStore

SCHEMA_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"


def with_tls_default(dsn: str) -> str:
    """`dsn` with `sslmode=verify-full` added when it names no `sslmode` and the server is not
    on this machine: TLS with the server's certificate verified by default, as everywhere in
    bridge (asyncpg's own default, `prefer`, falls back to plaintext and checks nothing). A
    DSN that says `sslmode=` keeps what it says."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return dsn
    if parts.scheme not in ("postgres", "postgresql") or "sslmode=" in parts.query:
        return dsn
    if is_loopback(parts.hostname or "localhost") or (parts.hostname or "").startswith("/"):
        return dsn
    query = f"{parts.query}&sslmode=verify-full" if parts.query else "sslmode=verify-full"
    return urlunsplit(parts._replace(query=query))


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, without its password: `postgresql host:port/database`."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"postgresql {host}{port}{parts.path or '/'}"
    except ValueError:
        return "postgresql"


class PostgresStateConfig(SecretFields, StateConfig):
    """`state: {backend: postgres, dsn: ${BRIDGE_PG_DSN}}` (or `dsn_file:`), shared by every
    replica. `schema` keeps bridge's tables apart from anything else in that database."""

    backend: Literal["postgres"] = "postgres"
    dsn: SecretStr | None = None
    db_schema: str = Field(default="bridge", alias="schema", pattern=SCHEMA_PATTERN)
    pool_min: int = Field(default=1, ge=0, le=100)
    pool_max: int = Field(default=10, ge=1, le=100)
    # Seconds any one statement may run before the server cancels it (then: unavailable).
    statement_timeout: float = Field(default=30.0, gt=0, le=3600)
    # Seconds to wait for a connection (to the server, or a free one from the pool).
    connect_timeout: float = Field(default=10.0, gt=0, le=600)
    # Several replicas (bridge/store/postgres/leases.py): seconds a replica owns a source
    # scope or a sink without renewing; one that stalls or dies longer loses its units.
    lease: float = Field(default=15.0, ge=1, le=3600)
    # This replica's name in the leases (default: host name and process id; a pod's name).
    replica_id: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _needs_dsn(self) -> PostgresStateConfig:
        if self.dsn is None:
            raise ValueError("set dsn (e.g. ${BRIDGE_PG_DSN}) or dsn_file")
        if self.pool_min > self.pool_max:
            raise ValueError("pool_min must not exceed pool_max")
        return self

    def build(self) -> PostgresStore:
        from bridge.store.postgres.store import PostgresStore

        assert self.dsn is not None
        return PostgresStore(with_tls_default(self.dsn.get_secret_value()), schema=self.db_schema,
                             pool_min=self.pool_min, pool_max=self.pool_max,
                             statement_timeout=self.statement_timeout,
                             connect_timeout=self.connect_timeout, lease=self.lease,
                             replica=self.replica_id)

    def describe(self) -> str:
        assert self.dsn is not None
        return f"{describe_dsn(self.dsn.get_secret_value())} schema {self.db_schema}"
