"""The PostgreSQL store (`state: {backend: postgres}`): shared state for several replicas.
`config` is its settings (no driver import: reading a config stays cheap), `store` the
`Store`, `schema` its versioned migrations, `errors` what a server error means, `leases` the
replicas sharing the work, `transfer` and `commands` the operator's migrate and leases."""

from bridge.store.postgres.config import PostgresStateConfig

__all__ = ["PostgresStateConfig"]
