"""The suite's real PostgreSQL: where it is, a schema of its own per test, and a raw look at
what a store wrote there (behind the `Store` interface's back, for "nothing changed" checks).

The server is the one the README's test command starts (127.0.0.1:5432, trust auth, database
`test`); `BRIDGE_TEST_PG_DSN` points elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bridge.store.postgres.schema import quote_ident
from bridge.store.postgres.store import PostgresStore

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


class PrivateServer:
    """A PostgreSQL server of its own (initdb in a temporary directory, a free port), for a test
    that stops and starts its server: the suite's shared server stays up for the tests running
    beside it (pytest-xdist). As root, the server runs as the `postgres` user (it refuses
    root). `stop` is immediate: what a crash or a pod eviction does; the next start recovers
    from the WAL."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir, self.root, self.port = bindir, root, port
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    @staticmethod
    def find_bindir() -> Path | None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        return found[-1].parent if found else None

    @classmethod
    async def create(cls, bindir: Path) -> PrivateServer:
        root = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = cls(bindir, root, port)
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(root, entry.pw_uid, entry.pw_gid)
        await server._run("initdb", "-D", str(root / "data"), "-U", "postgres", "--auth=trust",
                          "-E", "UTF8", "--no-sync", "--no-instructions")
        await server.start()
        return server

    async def _run(self, tool: str, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        proc = await asyncio.create_subprocess_exec(
            *prefix, str(self.bindir / tool), *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=self.root)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {out.decode(errors='replace')}")

    async def start(self) -> None:
        await self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"),
                        "-w", "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 "
                        f"-k {self.root} -c fsync=off", "start")

    async def stop(self) -> None:
        await self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w",
                        "stop")

    @asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """The server down for the block (immediately: no checkpoint, connections cut)."""
        await self.stop()
        try:
            yield
        finally:
            await self.start()

    async def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
