"""The suite's real PostgreSQL: where it is, a schema of its own per test, and a raw look at
what a store wrote there (behind the `Store` interface's back, for "nothing changed" checks).

The server is the one the README's test command starts (127.0.0.1:5432, trust auth, database
`test`); `BRIDGE_TEST_PG_DSN` points elsewhere."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from bridge.store.postgres import PostgresStore
from bridge.store.postgres.schema import quote_ident

PG_DSN = os.environ.get("BRIDGE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = ("items", "outbox", "dead_letters", "cursors", "sweeps", "muted", "silences",
          "sink_refs")


@dataclass(frozen=True)
class PgSchema:
    """One test's schema in the real server (dropped when the test ends)."""

    dsn: str
    schema: str

    def store(self, **kw: Any) -> PostgresStore:
        """A store over this schema, not opened yet (a small pool: tests open many)."""
        kw.setdefault("pool_max", 3)
        kw.setdefault("connect_timeout", 5.0)
        return PostgresStore(self.dsn, schema=self.schema, **kw)

    def config(self, **kw: Any) -> dict[str, Any]:
        """The `state:` section a `bridge` process uses to reach it."""
        return {"backend": "postgres", "dsn": self.dsn, "schema": self.schema, **kw}

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A raw connection with this schema first on its search path."""
        conn = await asyncpg.connect(self.dsn, server_settings={
            "search_path": quote_ident(self.schema)})
        try:
            yield conn
        finally:
            await conn.close()

    async def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table (committed data only), sorted."""
        async with self.connection() as conn:
            return {t: sorted((tuple(r) for r in await conn.fetch(f"SELECT * FROM {t}")),
                              key=repr) for t in TABLES}


def new_schema_name() -> str:
    return f"test_{uuid.uuid4().hex[:16]}"


async def server_answers(dsn: str = PG_DSN) -> str | None:
    """None when the server takes a connection; otherwise why not."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


class Server:
    """The real server's cluster (Debian's `pg_ctlcluster`), stopped and started by tests that
    need it gone for a while. `stop` is immediate: what a crash or a pod eviction does (the
    next start recovers from the WAL); the server is always started again by `outage`."""

    def __init__(self, pg_ctlcluster: str, version: str, name: str) -> None:
        self.pg_ctlcluster, self.version, self.name = pg_ctlcluster, version, name

    @classmethod
    def on_port(cls, pg_ctlcluster: str, port: int = 5432) -> Server | None:
        import subprocess

        listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True,
                                text=True, check=False).stdout
        for line in listed.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2] == str(port):
                return cls(pg_ctlcluster, fields[0], fields[1])
        return None

    async def _ctl(self, action: str, *extra: str) -> None:
        import asyncio

        proc = await asyncio.create_subprocess_exec(
            self.pg_ctlcluster, self.version, self.name, action, *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctlcluster {action} failed: {out.decode(errors='replace')}")

    @asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """The server down for the block (immediately: no checkpoint, connections cut)."""
        await self._ctl("stop", "-m", "immediate")
        try:
            yield
        finally:
            await self._ctl("start")
