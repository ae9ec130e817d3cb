"""Versioned migrations of the PostgreSQL schema, applied under an advisory lock.

Replicas starting together all call `migrate`; the first takes the lock and applies what is
missing in one transaction (PostgreSQL's DDL is transactional), the others wait for it and then
find nothing to do. A schema written by a newer bridge is refused with one line: an older one
must not write tables it does not understand.
"""

from __future__ import annotations

from importlib import resources

import asyncpg
import structlog

from bridge.store.base import StoreCorruptError

log = structlog.get_logger(__name__)

# Advisory lock keys are 64-bit integers shared by the whole database: each is derived from a
# name and the schema (`hashtextextended`), so two stores in one database never share a lock.
MIGRATE_LOCK = "bridge.migrate"


def migrations() -> list[tuple[int, str]]:
    """(version, sql) for every bundled migration, in order."""
    found = []
    for entry in resources.files("bridge.store.postgres.migrations").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


LATEST = migrations()[-1][0]


def quote_ident(name: str) -> str:
    """An identifier as SQL text (schema names come from the config, never from vendors)."""
    return '"' + name.replace('"', '""') + '"'


async def migrate(conn: asyncpg.Connection, schema: str, where: str) -> int:
    """Bring `schema` to the latest version; returns the version it was at. `where` names the
    database in messages (never the password)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                           f"{MIGRATE_LOCK}:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {quote_ident(schema)}.schema_migrations ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        current = await conn.fetchval(
            f"SELECT COALESCE(MAX(version), 0) FROM {quote_ident(schema)}.schema_migrations")
        if current > LATEST:
            raise StoreCorruptError(
                f"state in {where} has schema version {current}, newer than this bridge "
                f"understands ({LATEST}); run a newer bridge or restore an older backup")
        for version, sql in migrations():
            if version <= current:
                continue
            await conn.execute(f"SET LOCAL search_path TO {quote_ident(schema)}")
            await conn.execute(sql)
            await conn.execute(
                f"INSERT INTO {quote_ident(schema)}.schema_migrations (version) VALUES ($1)",
                version)
            log.info("state_migrated", where=where, version=version)
        return int(current)
