"""The PostgreSQL store (`state: {backend: postgres}`): shared state for several replicas.
`store` is the `Store`, `schema` its versioned migrations, `errors` what a server error means."""

from bridge.store.postgres.store import PostgresStateConfig, PostgresStore

__all__ = ["PostgresStateConfig", "PostgresStore"]
