"""The embedded default store: one SQLite file in WAL mode, created 0600.

All SQLite calls run on one dedicated thread, so the event loop never blocks on disk and the
connection is never shared between threads. WAL with synchronous=NORMAL survives a process
crash with every committed transaction; a power loss may roll back the last commits, which the
next sweep replays with the same event ids (at-least-once either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import operator
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import orjson
import structlog
from pydantic import Field

from bridge.diff import ItemWrite, State, StoredItem, StoredItems
from bridge.model import Event
from bridge.store.base import (
    MUTED_KEPT,
    DeadLetter,
    Delivery,
    ItemRecord,
    Muted,
    MuteReason,
    QueueStats,
    SilenceRecord,
    SinkRef,
    StateConfig,
    Store,
    StoreCorruptError,
    StoreError,
    StoreMaintenance,
    StoreUnavailableError,
    SweepCommit,
    SweepRecord,
    UndecodableDeliveries,
    claimed,
    commit_refused,
    event_or_none,
)
from bridge.store.kept import KeptItems

log = structlog.get_logger(__name__)
T = TypeVar("T")


def migrations() -> list[tuple[int, str]]:
    """(version, sql) for every bundled migration, in order."""
    found = []
    for entry in resources.files("bridge.store.migrations").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


# What an SQLite error says about the store (primary result codes): trouble that passes or that
# an operator fixes outside the file (a lock held too long, a full disk, an I/O error, a
# directory it may not write), or a file that is not a sound database. Anything else (a
# constraint, a bad value) refused that one statement.
_UNAVAILABLE = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL,
                          sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
                          sqlite3.SQLITE_PERM, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL})
_CORRUPT = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_NOT_WRITABLE = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM})

# WAL checkpoints. A first sweep writes ~10 MB of WAL per 2,000-item chunk (item rows, their
# outbox rows, and most of the random-keyed items index), so at SQLite's default threshold
# (1,000 pages) the writer copied the WAL into the file and fsynced it after every commit and
# most acknowledgements. Checkpointing once the WAL holds `_WAL_BYTES` instead copies a page
# rewritten by several commits (index pages, outbox pages filled then emptied) once, and syncs
# a tenth as often. It stays SQLite's own PASSIVE checkpoint after a commit, so the bound is the
# same mechanism as before: once the WAL holds that many frames it is copied into the file, and
# the next write starts it over from its beginning; a WAL file that a burst (one very large
# commit) made longer than `_WAL_LIMIT` is cut back to it then. (Checkpoints on a connection and
# thread of their own were tried: they took ~0.3 s of 4.5 s off the writer's CPU, but cost more
# CPU in all, as they copied the same pages more often.)
_WAL_BYTES = 40 * 1024 * 1024
# Pages of 32 KiB rather than SQLite's 4 KiB, in a file this version creates (an existing file
# keeps its page size until a VACUUM). SQLite writes every page to the WAL as a frame of its own
# (a header and the page, each one write) and copies it back at a checkpoint: a first sweep's
# ~300 MB are an eighth as many frames. 16 KiB took the commits of a 100k first sweep from
# 1.7-1.9 s of the writer's CPU to 1.0-1.2 s; 32 KiB took a 300k first sweep from 12.1 s to
# 10.2-10.6 s (its random-keyed index pages, rewritten by every chunk, are fewer and shallower).
# Not 64 KiB: an acknowledgement rewrites the partly emptied outbox pages at either end of
# the rows it deletes, and claiming and acknowledging 50,000 events took 12% longer with them
# (16 and 32 KiB alike). Item rows of ~1.3 KB still fill pages (two dozen a page); a sweep that
# changes a few items scattered over the file writes 32 KiB a page it touches, which a steady
# sweep of few changes does not notice.
_PAGE_SIZE = 32_768
_WAL_LIMIT = 64 * 1024 * 1024


def _result_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # absent on errors raised by the module
    return code & 0xFF if isinstance(code, int) else None


def store_error(message: str, exc: sqlite3.Error) -> StoreError:
    """`message` as the kind of StoreError that `exc` means (see bridge/store/base.py)."""
    code = _result_code(exc)
    if code in _UNAVAILABLE:
        return StoreUnavailableError(message)
    if code in _CORRUPT:
        return StoreCorruptError(message)
    return StoreError(message)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def create_private_file(path: Path) -> None:
    """Create `path` as 0600 before SQLite opens it (its -wal/-shm files inherit the mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("state_file_permissions_tightened", path=str(path), mode=oct(mode))
        path.chmod(0o600)


class SQLiteStateConfig(StateConfig):
    """`state: {backend: sqlite, path: ...}`, the embedded default: one file, 0600, WAL."""

    backend: Literal["sqlite"] = "sqlite"
    path: Path = Path("state/bridge.db")
    # Seconds a statement waits for another process's lock (a backup, an operator's sqlite3
    # shell) before the store reports itself unavailable and the caller backs off.
    busy_timeout: float = Field(default=5.0, ge=0, le=600)

    def build(self) -> SQLiteStore:
        return SQLiteStore(self.path, busy_timeout=self.busy_timeout)

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def disk_path(self) -> Path | None:
        return self.path.parent


class SQLiteStore(Store, StoreMaintenance):
    def __init__(self, path: Path | str, *, busy_timeout: float = 5.0,
                 checkpoint_pages: int | None = None) -> None:
        """`busy_timeout`: seconds a statement waits for another process's lock on the file
        before the store reports itself unavailable. `checkpoint_pages`: WAL frames after
        which a commit checkpoints (by default `_WAL_BYTES` of the file's pages; tests bound
        the WAL with a small one)."""
        self.path = Path(path)
        self._checkpoint_pages = None if checkpoint_pages is None else max(1, checkpoint_pages)
        self._busy_ms = max(0, round(busy_timeout * 1000))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        # Outbox claims read on a connection and thread of their own: a WAL reader never waits
        # for the writer, so delivery goes on while a sweep commits, and a worker's next claim
        # is not queued behind its previous acknowledgement.
        self._reader_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-read")
        self._reader: sqlite3.Connection | None = None
        self._kept = KeptItems()  # used on the writer's thread only

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, read: bool = False,
                   failing: str = "") -> T:
        """Run `fn` on the writer's thread, or with `read` on the outbox reader's. An SQLite
        error comes out as the StoreError it means, as "{failing}: {error}"."""
        executor = self._reader_executor if read else self._executor

        def call() -> T:
            conn = self._reader if read else self._conn
            if conn is None:
                raise StoreUnavailableError(f"state store {self.path} is not open")
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise store_error(f"{failing or f'state store {self.path}'}: {exc}", exc) from exc

        if self._conn is None:  # closed: the executors are gone too
            raise StoreUnavailableError(f"state store {self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    # -- lifecycle

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open_sync)
        try:
            await loop.run_in_executor(self._reader_executor, self._open_reader)
        except BaseException:
            await self.close()
            raise

    def _open_reader(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise StoreUnavailableError(
                f"cannot open state file {self.path} for reading: {exc}") from None
        self._reader = conn

    def _open_sync(self) -> None:
        try:
            create_private_file(self.path)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"cannot open state file {self.path}: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")  # a new file only (see there)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = self._checkpoint_pages or _WAL_BYTES // page_size
            conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
            # Delivered outbox rows are deleted by the thousand. Some SQLite builds (Debian's)
            # default to secure_delete = ON, which zeroes every page a delete frees and writes
            # it to the WAL: the delete cost three times as much. FAST still clears deleted rows
            # in the pages a delete writes anyway, only not the pages it frees (which new outbox
            # rows reuse soon); the same texts live on in the items' snapshots in this file.
            conn.execute("PRAGMA secure_delete = FAST")
            # 16 MiB of page cache (the default is 2 MiB): a first sweep inserts its items in
            # the vendor's id order, all over the unique index, and a small cache writes and
            # re-reads the same index pages for every chunk.
            conn.execute("PRAGMA cache_size = -16384")
            conn.execute("PRAGMA foreign_keys = ON")
            problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise StoreCorruptError(
                    f"state file {self.path} is corrupt ({'; '.join(problems[:3])}); restore a "
                    "backup (`bridge state backup` makes them) or move the file away to start fresh"
                )
            self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            code = _result_code(exc)
            if code in _NOT_WRITABLE:
                # A sound file in a place we may not write: not a reason to replace the state.
                raise StoreUnavailableError(
                    f"state file {self.path} cannot be written ({exc}): SQLite must write it and "
                    f"create {self.path.name}-wal and {self.path.name}-shm in {self.path.parent}; "
                    "fix the permissions or the mount (the state itself is not damaged)"
                ) from None
            if code in _UNAVAILABLE:  # locked by another process, a full disk: it passes
                raise StoreUnavailableError(
                    f"state file {self.path} cannot be used right now ({exc}); the state itself "
                    "is not damaged: try again once the other process or the disk lets go"
                ) from None
            raise StoreCorruptError(
                f"state file {self.path} is not a usable SQLite database: {exc}; restore a backup "
                "or move the file away to start fresh"
            ) from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        steps = migrations()
        latest = steps[-1][0]
        if current > latest:
            raise StoreCorruptError(
                f"state file {self.path} has schema version {current}, newer than this bridge "
                f"understands ({latest}); run a newer bridge or restore an older backup"
            )
        for version, sql in steps:
            if version <= current:
                continue
            with _transaction(conn):
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
            log.info("state_migrated", path=str(self.path), version=version)

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA optimize")
                self._conn.close()
                self._conn = None
            self._kept.forget()

        def shut_reader() -> None:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._reader_executor, shut_reader)
        self._reader_executor.shutdown(wait=True)
        await loop.run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)

    # -- sweeps and item state

    async def load_items(self, scope: str, kinds: Collection[str]) -> StoredItems:
        kinds = list(kinds)
        if not kinds:
            return StoredItems()

        def q(conn: sqlite3.Connection) -> StoredItems:
            # Changes when another connection (another process: the CLI, a second daemon)
            # commits to the file; this one's own commits are folded into what is kept.
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            kept = self._kept.get(scope, kinds, version)
            if kept is not None:
                return kept
            items = load(conn)
            self._kept.keep(scope, kinds, version, items)
            return items

        def load(conn: sqlite3.Connection) -> StoredItems:
            rows = conn.execute(_load_items_sql(len(kinds)), (scope, *kinds))
            # A scope's items share a few kinds, two states and, first seen by one sweep, a
            # timestamp: each text is made (or parsed) once and shared, not once per row (at
            # 300k items, tens of MB). Tracked values repeat too (one title, severity and
            # status on every host a check flags): 300k simulated ScanOrbit findings hold 113k
            # distinct texts, so sharing equal ones keeps ~24 MB less for the whole sweep; the
            # table of them goes when the load is done.
            shared: dict[str, str] = {}
            moments: dict[str, datetime] = {}
            same: dict[str, str] = {}
            by_kind: dict[str, dict[str, StoredItem]] = {}
            for kind, key, state, tracked, counter, misses, seen in rows:
                keys = by_kind.get(kind)
                if keys is None:
                    keys = by_kind[kind] = {}
                kind = shared.setdefault(kind, kind)
                first_seen = moments.get(seen)
                if first_seen is None:
                    first_seen = moments[seen] = _dt(seen)
                keys[key] = StoredItem(kind, key, cast(State, shared.setdefault(state, state)),
                                       same.setdefault(tracked, tracked), counter, misses,
                                       first_seen)
            return StoredItems(by_kind)

        return await self._run(q)

    async def load_snapshots(self, scope: str, idents: Collection[tuple[str, str]]
                             ) -> dict[tuple[str, str], str]:
        def q(conn: sqlite3.Connection) -> dict[tuple[str, str], str]:
            out: dict[tuple[str, str], str] = {}
            for kind, key in idents:
                row = conn.execute(
                    "SELECT snapshot FROM items WHERE scope = ? AND kind = ? AND key = ?",
                    (scope, kind, key),
                ).fetchone()
                if row is not None:
                    out[(kind, key)] = row[0]
            return out

        return await self._run(q)

    async def load_cursor(self, scope: str) -> dict[str, str]:
        def q(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute("SELECT name, value FROM cursors WHERE scope = ?", (scope,))
            return {name: value for name, value in rows}

        return await self._run(q)

    async def commit_chunk(self, scope: str, writes: Sequence[ItemWrite],
                           deliveries: Sequence[tuple[Event, Sequence[str]]],
                           muted: Sequence[Muted] = ()) -> None:
        rows = _Rows.of(scope, writes, deliveries, muted)

        def tx(conn: sqlite3.Connection) -> None:
            with self._kept_in_step(conn, scope, writes):
                rows.write(conn)

        await self._run(tx, failing=f"state commit failed for {scope}")

    async def commit_sweep(self, commit: SweepCommit) -> int:
        r = commit.record
        rows = _Rows.of(r.scope, commit.writes, commit.deliveries, commit.muted)
        cursor_rows = [(r.scope, k, v) for k, v in commit.cursor.items()]

        def tx(conn: sqlite3.Connection) -> int:
            with self._kept_in_step(conn, r.scope, commit.writes):
                rows.write(conn)
                conn.executemany(
                    "INSERT INTO cursors (scope, name, value) VALUES (?,?,?) "
                    "ON CONFLICT (scope, name) DO UPDATE SET value = excluded.value",
                    cursor_rows,
                )
                cur = conn.execute(
                    "INSERT INTO sweeps (scope, source, started_at, finished_at, outcome, "
                    "items_seen, events, requests, notes, error) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (r.scope, r.source, _ts(r.started_at), _ts(r.finished_at), r.outcome,
                     r.items_seen, r.events, r.requests, json.dumps(list(r.notes)), r.error),
                )
                # Keep the sweep log bounded: the last 1,000 per scope (ids are shared by all
                # scopes, so count this scope's rows rather than subtract from the id).
                conn.execute(
                    "DELETE FROM sweeps WHERE scope = ? AND id < (SELECT id FROM sweeps "
                    "WHERE scope = ? ORDER BY id DESC LIMIT 1 OFFSET 999)",
                    (r.scope, r.scope),
                )
                _prune_muted(conn, r.scope)
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._run(tx, failing=f"state commit failed for {r.scope}")

    @contextlib.contextmanager
    def _kept_in_step(self, conn: sqlite3.Connection, scope: str,
                      writes: Sequence[ItemWrite]) -> Iterator[None]:
        """A transaction writing `writes` to the scope, and the scope's kept items told of
        them once it committed, or forgotten if it did not (the file may hold either)."""
        try:
            with _transaction(conn):
                yield
        except BaseException:
            self._kept.forget(scope)
            raise
        self._kept.committed(scope, writes)

    # -- what was not delivered, and why

    async def muted(self, scope: str | None = None, *, silence_id: str | None = None,
                    reason: MuteReason | None = None, limit: int = 100) -> list[Muted]:
        def q(conn: sqlite3.Connection) -> list[Muted]:
            rows = conn.execute(
                f"SELECT {_MUTED_COLUMNS} FROM muted WHERE (?1 IS NULL OR scope = ?1) "
                "AND (?2 IS NULL OR silence_id = ?2) AND (?3 IS NULL OR reason = ?3) "
                "ORDER BY seq DESC LIMIT ?4",
                (scope, silence_id, reason, limit),
            ).fetchall()
            return [Muted(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], _dt(r[9]),
                          r[10], r[11], r[12]) for r in rows]

        return await self._run(q)

    async def muted_counts(self, scope: str, reason: MuteReason
                           ) -> dict[str, dict[tuple[str, str], int]]:
        def q(conn: sqlite3.Connection) -> dict[str, dict[tuple[str, str], int]]:
            out: dict[str, dict[tuple[str, str], int]] = {}
            for sink, kind, severity, n in conn.execute(
                    "SELECT sink, kind, severity, COUNT(*) FROM muted WHERE scope = ? "
                    "AND reason = ? GROUP BY sink, kind, severity", (scope, reason)):
                out.setdefault(sink, {})[(kind, severity)] = n
            return out

        return await self._run(q)

    # -- silences

    async def add_silence(self, silence: SilenceRecord) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(f"INSERT INTO silences ({_SILENCE_COLUMNS}) VALUES "
                             "(?,?,?,?,?,?,?,?,?,?)", _silence_row(silence))
            except sqlite3.IntegrityError:
                raise StoreError(f"a silence with id {silence.id} exists already") from None

        await self._run(tx)

    async def silences(self, *, unsettled: bool = False) -> list[SilenceRecord]:
        def q(conn: sqlite3.Connection) -> list[SilenceRecord]:
            where = "WHERE settled_at IS NULL" if unsettled else ""
            rows = conn.execute(f"SELECT {_SILENCE_COLUMNS} FROM silences {where} "
                                "ORDER BY created_at DESC, id").fetchall()
            return [_silence(r) for r in rows]

        return await self._run(q)

    async def expire_silence(self, silence_id: str, at: datetime) -> SilenceRecord | None:
        def tx(conn: sqlite3.Connection) -> SilenceRecord | None:
            with _transaction(conn):
                row = conn.execute(f"SELECT {_SILENCE_COLUMNS} FROM silences WHERE id = ?",
                                   (silence_id,)).fetchone()
                if row is None:
                    return None
                silence = _silence(row)
                if silence.ends_at > at:
                    silence = replace(silence, ends_at=at, expired_at=at)
                    conn.execute("UPDATE silences SET ends_at = ?, expired_at = ? WHERE id = ?",
                                 (_ts(at), _ts(at), silence_id))
                return silence

        return await self._run(tx)

    async def settle_silence(self, silence_id: str, at: datetime,
                             deliveries: Sequence[tuple[Event, Sequence[str]]],
                             muted: Sequence[Muted] = ()) -> bool:
        rows = _Rows.of("silence " + silence_id, [], deliveries, muted)

        def tx(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                claimed = conn.execute("UPDATE silences SET settled_at = ? WHERE id = ? AND "
                                       "settled_at IS NULL", (_ts(at), silence_id)).rowcount
                if claimed:
                    rows.write(conn)
                return bool(claimed)

        return await self._run(tx, failing=f"settling silence {silence_id} failed")

    # -- a sink's own references

    async def sink_refs(self, sink: str, keys: Collection[str] | None = None, *,
                        state: str | None = None, limit: int = 100) -> list[SinkRef]:
        wanted = None if keys is None else orjson.dumps(sorted(keys)).decode()

        def q(conn: sqlite3.Connection) -> list[SinkRef]:
            rows = conn.execute(
                "SELECT sink, key, state, value, updated_at FROM sink_refs WHERE sink = ?1 "
                "AND (?2 IS NULL OR key IN (SELECT value FROM json_each(?2))) "
                "AND (?3 IS NULL OR state = ?3) ORDER BY key LIMIT ?4",
                (sink, wanted, state, limit)).fetchall()
            return [SinkRef(r[0], r[1], r[2], r[3], _dt(r[4])) for r in rows]

        return await self._run(q)

    async def put_sink_refs(self, refs: Sequence[SinkRef], *,
                            silence: SilenceRecord | None = None) -> None:
        rows = [(r.sink, r.key, r.state, r.value, _ts(r.updated_at)) for r in refs]

        def tx(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                if silence is not None:
                    try:
                        conn.execute(f"INSERT INTO silences ({_SILENCE_COLUMNS}) VALUES "
                                     "(?,?,?,?,?,?,?,?,?,?)", _silence_row(silence))
                    except sqlite3.IntegrityError:
                        raise StoreError(
                            f"a silence with id {silence.id} exists already") from None
                conn.executemany(
                    "INSERT INTO sink_refs (sink, key, state, value, updated_at) "
                    "VALUES (?,?,?,?,?) ON CONFLICT (sink, key) DO UPDATE SET "
                    "state = excluded.state, value = excluded.value, "
                    "updated_at = excluded.updated_at", rows)

        await self._run(tx)

    async def delete_sink_refs(self, sink: str, keys: Collection[str]) -> None:
        wanted = orjson.dumps(sorted(keys)).decode()

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM sink_refs WHERE sink = ? AND key IN "
                         "(SELECT value FROM json_each(?))", (sink, wanted))

        await self._run(tx)

    # -- outbox

    async def claim(self, sink: str, limit: int, after: int = 0, *,
                    decode: bool = True) -> list[Delivery]:
        # One aggregate row for the whole batch, not a row per event: Python's sqlite3 lets go
        # of the GIL for every row it steps through, and while the event loop is busy encoding
        # the previous batch, taking it back costs up to a switch interval (5 ms) each time.
        # Bodies are joined by a record separator (JSON text never holds a raw control
        # character).
        def q(conn: sqlite3.Connection) -> tuple[str, str, str, str | None]:
            row: tuple[str, str, str, str | None] = conn.execute(
                "SELECT json_group_array(seq), json_group_array(attempts), "
                "json_group_array(event_id), group_concat(body, char(30)) FROM (SELECT seq, "
                "attempts, event_id, body FROM outbox WHERE sink = ? AND seq > ? ORDER BY seq "
                "LIMIT ?)",
                (sink, after, limit),
            ).fetchone()
            return row

        seqs, attempts, event_ids, joined = await self._run(q, read=True)
        if joined is None:
            return []
        seq_list: list[int] = orjson.loads(seqs)
        bodies = joined.split("\x1e")
        if len(bodies) != len(seq_list):  # a body with a raw control character: not JSON
            await self._find_undecodable(sink, limit, after)
        # Every column aggregates the same rows in the same order, whatever that order is.
        rows = sorted(zip(seq_list, orjson.loads(event_ids), bodies, orjson.loads(attempts),
                          strict=True), key=lambda row: row[0])
        return claimed(sink, rows, decode=decode)

    async def _find_undecodable(self, sink: str, limit: int, after: int) -> None:
        """The batch did not split into its rows: look at them one by one and name the
        culprits (raises `UndecodableDeliveries`)."""

        def q(conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
            return conn.execute(
                "SELECT seq, event_id, body FROM outbox WHERE sink = ? AND seq > ? ORDER BY seq LIMIT ?",
                (sink, after, limit),
            ).fetchall()

        UndecodableDeliveries.check(sink, await self._run(q, read=True))
        raise AssertionError("a body holding a record separator is not JSON")

    async def ack(self, sink: str, seqs: Sequence[int]) -> None:
        """Delivered rows go, bodies with them, in one statement (so one step, see `claim`)."""
        ids = _json_list(seqs)

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM outbox WHERE sink = ? AND seq IN (SELECT value FROM json_each(?))",
                         (sink, ids))

        await self._run(tx)

    async def record_failure(self, sink: str, seqs: Sequence[int], error: str) -> None:
        ids = _json_list(seqs)

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE sink = ? AND seq IN "
                "(SELECT value FROM json_each(?))", (error[:2000], sink, ids))

        await self._run(tx)

    async def bury(self, sink: str, seqs: Sequence[int], error: str, *,
                   summary: str | None = None) -> None:
        now = time.time()

        ids = _json_list(seqs)

        def tx(conn: sqlite3.Connection) -> None:
            # Set-wise, one step a statement (see `claim`): a storm summary buries thousands.
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO dead_letters (seq, sink, event_id, body, attempts, error, "
                    "failed_at, summary) SELECT seq, sink, event_id, body, attempts + 1, ?, ?, ? "
                    "FROM outbox WHERE sink = ? AND seq IN (SELECT value FROM json_each(?)) "
                    "ORDER BY seq", (error[:2000], now, summary, sink, ids))
                conn.execute("DELETE FROM outbox WHERE sink = ? AND seq IN "
                             "(SELECT value FROM json_each(?))", (sink, ids))

        await self._run(tx)

    async def dead_letters(self, sink: str | None = None, limit: int = 100, *,
                           summarised: bool | None = None) -> list[DeadLetter]:
        def q(conn: sqlite3.Connection
              ) -> list[tuple[int, str, str, str, int, str, float, str | None]]:
            return conn.execute(
                "SELECT seq, sink, event_id, body, attempts, error, failed_at, summary "
                "FROM dead_letters WHERE (? IS NULL OR sink = ?) AND (? IS NULL OR "
                "(summary IS NOT NULL) = ?) ORDER BY seq LIMIT ?",
                (sink, sink, summarised, summarised, limit),
            ).fetchall()

        return [
            DeadLetter(seq, s, event_id, event_or_none(body), attempts, error,
                       datetime.fromtimestamp(failed_at, UTC), summary)
            for seq, s, event_id, body, attempts, error, failed_at, summary
            in await self._run(q)
        ]

    async def replay(self, sink: str | None = None, seqs: Sequence[int] | None = None, *,
                     summarised: bool | None = False) -> int:
        now = time.time()

        def tx(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                rows = conn.execute(
                    "SELECT seq, sink, event_id, body FROM dead_letters WHERE (? IS NULL OR sink = ?) "
                    "AND (? IS NULL OR (summary IS NOT NULL) = ?) ORDER BY seq",
                    (sink, sink, summarised, summarised),
                ).fetchall()
                if seqs is not None:
                    wanted = set(seqs)
                    rows = [r for r in rows if r[0] in wanted]
                _for_rows(conn, "INSERT INTO outbox (sink, event_id, body, created_at) VALUES {rows}",
                          [(s, eid, body, now) for _, s, eid, body in rows])
                conn.execute("DELETE FROM dead_letters WHERE seq IN (SELECT value FROM json_each(?))",
                             (_json_list([r[0] for r in rows]),))
            return len(rows)

        return await self._run(tx)

    async def queue_stats(self) -> list[QueueStats]:
        def q(conn: sqlite3.Connection) -> list[QueueStats]:
            pending = {
                sink: (n, oldest)
                for sink, n, oldest in conn.execute(
                    "SELECT sink, COUNT(*), MIN(created_at) FROM outbox GROUP BY sink"
                )
            }
            dead: dict[str, int] = {}
            summarised: dict[str, int] = {}
            for sink, carried, n in conn.execute(
                    "SELECT sink, summary IS NOT NULL, COUNT(*) FROM dead_letters "
                    "GROUP BY sink, summary IS NOT NULL"):
                (summarised if carried else dead)[sink] = n
            return [
                QueueStats(
                    sink,
                    pending.get(sink, (0, None))[0],
                    datetime.fromtimestamp(o, UTC) if (o := pending.get(sink, (0, None))[1]) else None,
                    dead.get(sink, 0),
                    summarised.get(sink, 0),
                )
                for sink in sorted(set(pending) | set(dead) | set(summarised))
            ]

        return await self._run(q)

    # -- inspection

    async def list_items(self, scope: str | None = None, state: str | None = None,
                         limit: int = 100, *, scopes: Collection[str] | None = None,
                         kinds: Collection[str] | None = None, since: datetime | None = None,
                         severities: Collection[str] | None = None) -> list[ItemRecord]:
        # Lists travel as one JSON parameter each: no statement built from values, and no
        # limit on how many a filter may name. Times are stored as UTC ISO text, so they
        # compare as text.
        lists = [None if v is None else orjson.dumps(sorted(v)).decode()
                 for v in (scopes, kinds, severities)]

        def q(conn: sqlite3.Connection) -> list[ItemRecord]:
            rows = conn.execute(
                "SELECT scope, kind, key, state, tracked, counter, misses, first_seen, "
                "changed_at, resolved_at, snapshot FROM items WHERE (?1 IS NULL OR scope = ?1) "
                "AND (?2 IS NULL OR state = ?2) "
                "AND (?3 IS NULL OR scope IN (SELECT value FROM json_each(?3))) "
                "AND (?4 IS NULL OR kind IN (SELECT value FROM json_each(?4))) "
                "AND (?5 IS NULL OR changed_at >= ?5) "
                "AND (?6 IS NULL OR json_extract(snapshot, '$.severity') IN "
                "(SELECT value FROM json_each(?6))) "
                "ORDER BY changed_at DESC, scope, kind, key LIMIT ?7",
                (scope, state, *lists[:2], _ts(since.astimezone(UTC)) if since else None,
                 lists[2], limit),
            ).fetchall()
            return [ItemRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _dt(r[7]), _dt(r[8]),
                               _dt(r[9]) if r[9] is not None else None, r[10]) for r in rows]

        return await self._run(q)

    async def item_counts(self) -> list[tuple[str, str, str, int]]:
        def q(conn: sqlite3.Connection) -> list[tuple[str, str, str, int]]:
            return list(conn.execute(
                "SELECT scope, kind, state, COUNT(*) FROM items GROUP BY scope, kind, state"
            ).fetchall())

        return await self._run(q)

    async def sweeps(self, scope: str | None = None, limit: int = 20, *,
                     outcomes: Collection[str] | None = None) -> list[SweepRecord]:
        wanted = None if outcomes is None else orjson.dumps(sorted(outcomes)).decode()

        def q(conn: sqlite3.Connection) -> list[SweepRecord]:
            rows = conn.execute(
                "SELECT id, scope, source, started_at, finished_at, outcome, items_seen, events, "
                "requests, notes, error FROM sweeps WHERE (?1 IS NULL OR scope = ?1) "
                "AND (?2 IS NULL OR outcome IN (SELECT value FROM json_each(?2))) "
                "ORDER BY id DESC LIMIT ?3",
                (scope, wanted, limit),
            ).fetchall()
            return [
                SweepRecord(scope=r[1], source=r[2], started_at=_dt(r[3]), finished_at=_dt(r[4]),
                            outcome=r[5], items_seen=r[6], events=r[7], requests=r[8],
                            notes=tuple(json.loads(r[9])), error=r[10], id=r[0])
                for r in rows
            ]

        return await self._run(q)

    async def swept_scopes(self) -> dict[str, str]:
        def q(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute("SELECT scope, source FROM sweeps WHERE id IN "
                                "(SELECT MAX(id) FROM sweeps GROUP BY scope)")
            return {scope: source for scope, source in rows}

        return await self._run(q)

    async def backup(self, dest: Path) -> None:
        dest = Path(dest)

        def copy(conn: sqlite3.Connection) -> None:
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.unlink(missing_ok=True)
            create_private_file(tmp)
            target = sqlite3.connect(tmp)
            try:
                conn.backup(target)
            finally:
                target.close()
            os.replace(tmp, dest)

        await self._run(copy)

    async def check(self) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            return [] if rows == ["ok"] else rows

        return await self._run(q)


def _json_list(seqs: Iterable[int]) -> str:
    """Outbox seqs as one JSON array parameter, for `seq IN (SELECT value FROM json_each(?))`:
    a set-wise statement steps once, where `executemany` steps (and waits for the GIL, see
    `_for_rows`) once per row."""
    return orjson.dumps(list(seqs)).decode()


def _load_items_sql(kinds: int) -> str:
    """A scope's item states (`load_items`), for `kinds` kinds, read in the file's order.

    The rows are found through the unique index, which holds their rowids, and then read in
    rowid order: the order they were written in, page after page. Read in the index's (key)
    order, every row is a lookup somewhere else in the file: 100,000 items took 0.35-0.6 s
    that way and 0.17 s this way, in a file of one scope as in one of ten. Asked plainly for a
    scope's rows, the planner reads them in key order unless statistics say the scope fills
    the table: always in a file of many tenants, and in any file until `ANALYZE` has run (only
    `close` ran it, so a daemon started on an empty file kept the key order as long as it ran).
    A scan of the whole table, 0.13 s for a file of one scope, would read every tenant's rows
    to load one; the planner still picks it where statistics say the scope fills the table."""
    return ("SELECT kind, key, state, tracked, counter, misses, first_seen FROM items "
            "WHERE rowid IN (SELECT rowid FROM items WHERE scope = ? AND kind IN "
            f"({','.join('?' * kinds)}))")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        # After an I/O error or a full disk SQLite may have rolled back already; a failing
        # ROLLBACK must not replace the error that says what went wrong.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_MUTED_COLUMNS = ("event_id, type, source, vendor, scope, kind, key, title, severity, "
                  "occurred_at, sink, reason, silence_id")


def _prune_muted(conn: sqlite3.Connection, scope: str) -> None:
    """Forget a scope's muted rows older than `MUTED_KEPT`, except those a silence not yet
    settled will need to re-notify its items."""
    conn.execute("DELETE FROM muted WHERE scope = ? AND recorded_at < ? AND (silence_id IS NULL "
                 "OR silence_id NOT IN (SELECT id FROM silences WHERE settled_at IS NULL))",
                 (scope, time.time() - MUTED_KEPT.total_seconds()))


_SILENCE_COLUMNS = ("id, matchers, starts_at, ends_at, author, reason, origin, created_at, "
                    "expired_at, settled_at")


def _silence_row(s: SilenceRecord) -> tuple[Any, ...]:
    return (s.id, s.matchers, _ts(s.starts_at), _ts(s.ends_at), s.author, s.reason, s.origin,
            _ts(s.created_at), _ts(s.expired_at), _ts(s.settled_at))


def _silence(r: Sequence[Any]) -> SilenceRecord:
    return SilenceRecord(r[0], r[1], _dt(r[2]), _dt(r[3]), r[4], r[5], r[6], _dt(r[7]),
                         _dt(r[8]) if r[8] is not None else None,
                         _dt(r[9]) if r[9] is not None else None)


class _Stamps(dict[datetime, str]):
    """`_ts` remembered: a sweep's writes share a few moments (its start, first sightings)."""

    def __call__(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        text = self.get(value)
        if text is None:
            text = self[value] = value.isoformat()
        return text


_KEY = operator.itemgetter(2)  # an item row's key (`_Rows.full`)


@dataclass(frozen=True, slots=True)
class _Rows:
    """Item writes, outbox rows and muted rows, encoded before the write lock is taken."""

    full: list[tuple[Any, ...]]
    partial: list[tuple[Any, ...]]
    outbox: list[tuple[str, str, str, float]]
    muted: list[tuple[Any, ...]]

    @classmethod
    def of(cls, scope: str, writes: Sequence[ItemWrite],
           deliveries: Sequence[tuple[Event, Sequence[str]]], muted: Sequence[Muted] = ()
           ) -> _Rows:
        now = time.time()
        try:
            outbox = [(sink, e.id, body, now) for e, sinks in deliveries if sinks
                      for body in (e.to_json(),) for sink in sinks]
        except TypeError as exc:  # orjson's JSONEncodeError: a value JSON cannot hold
            raise commit_refused(scope, f"an event cannot be encoded: {exc}") from exc
        ts = _Stamps()
        return cls(
            full=[(scope, w.kind, w.key, w.state, w.tracked, w.counter, w.misses,
                   ts(w.first_seen), ts(w.changed_at), ts(w.resolved_at), w.snapshot)
                  for w in writes if w.snapshot is not None],
            partial=[(w.state, w.misses, w.counter, ts(w.changed_at), ts(w.resolved_at), scope,
                      w.kind, w.key) for w in writes if w.snapshot is None],
            outbox=outbox,
            muted=[(m.event_id, m.type, m.source, m.vendor, m.scope, m.kind, m.key, m.title,
                    m.severity, _ts(m.occurred_at), m.sink, m.reason, m.silence_id, now)
                   for m in muted],
        )

    def write(self, conn: sqlite3.Connection) -> None:
        _for_rows(
            conn,
            "INSERT INTO items (scope, kind, key, state, tracked, counter, misses, first_seen, "
            "changed_at, resolved_at, snapshot) VALUES {rows} "
            "ON CONFLICT (scope, kind, key) DO UPDATE SET state = excluded.state, "
            "tracked = excluded.tracked, counter = excluded.counter, misses = excluded.misses, "
            "changed_at = excluded.changed_at, resolved_at = excluded.resolved_at, "
            "snapshot = excluded.snapshot",
            # In key order: consecutive rows land in the same pages of the items index, where
            # a vendor's order (random ids) sends each to another. Sorted here, on the writer's
            # thread: a 300k first sweep's writer took 4.2-4.3 s of CPU instead of 5.4-5.6 s.
            sorted(self.full, key=_KEY),
        )
        _for_rows(
            conn,
            # A miss count is not a change: changed_at moves only when the state does.
            "UPDATE items SET changed_at = CASE WHEN items.state = v.column1 THEN "
            "items.changed_at ELSE v.column4 END, state = v.column1, misses = v.column2, "
            "counter = v.column3, resolved_at = COALESCE(v.column5, items.resolved_at) "
            "FROM (VALUES {rows}) AS v "
            "WHERE items.scope = v.column6 AND items.kind = v.column7 AND items.key = v.column8",
            self.partial,
        )
        _for_rows(conn, "INSERT INTO outbox (sink, event_id, body, created_at) VALUES {rows}",
                  self.outbox)
        _for_rows(conn, f"INSERT INTO muted ({_MUTED_COLUMNS}, recorded_at) VALUES {{rows}}",
                  self.muted)


# Rows a statement of `_for_rows` takes: a first sweep's chunk of 5,000 items (bridge/sweep.py
# `CHUNK`) is five statements a table. Each statement is one more wait for the GIL (see there):
# with 500 rows a statement the writer spent 1.8x its CPU in wall time during a first sweep,
# with 2,000 1.4x. Not more: a prepared statement of 1,000 item rows takes ~1.7 MB, and
# sqlite3 keeps up to 128 prepared statements per connection, so the texts must repeat (see
# `_statement_sizes`).
_ROWS_PER_STATEMENT = 1_000


def _statement_sizes(rows: int, most: int) -> Iterator[int]:
    """`rows` as statements of `most` rows, the rest in powers of two (1,100 rows: 1,000, 64,
    32, 4): whatever the chunk sizes, a table's statements are of a dozen sizes, so the
    prepared ones that sqlite3 caches stay few and their memory bounded (~2 of the largest)."""
    full, rest = divmod(rows, most)
    yield from itertools.repeat(most, full)
    bit = 1 << rest.bit_length()
    while rest:
        bit >>= 1
        if rest & bit:
            rest -= bit
            yield bit


def _for_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run `sql` for `rows`, up to a thousand at a time, its `{rows}` standing for them as
    `(?,…),(?,…)…`: each statement steps once, however many rows it writes.

    Not `executemany`, which steps once per row: Python's sqlite3 lets go of the GIL around
    every step, and while the event loop is busy (a sweep diffing its next pages, a sink
    worker encoding a batch) the writer waits up to a switch interval (5 ms) to take it back,
    each time. With a thread spinning Python beside it, 100,000 item rows took 496 s through
    `executemany` and 5.4 s in statements of 500 rows (the same rows, the same pragmas). One
    statement binds all its rows under the GIL, then SQLite writes them without it.
    """
    if not rows:
        return
    width = len(rows[0])
    most = max(1, min(_ROWS_PER_STATEMENT,
                      conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    one = "(" + ",".join("?" * width) + ")"
    start = 0
    for size in _statement_sizes(len(rows), most):
        part = rows[start:start + size]
        start += size
        conn.execute(sql.replace("{rows}", ",".join([one] * size)),
                     list(itertools.chain.from_iterable(part)))


def _split_sql(sql: str) -> list[str]:
    """Statements of a migration file (ours contain no semicolons inside literals)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


