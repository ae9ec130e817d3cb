"""The SQLite store, on real files: what only a file-backed SQLite store has (permissions,
WAL, schema versions and migrations, corruption, damaged rows, backup and integrity check) and
which SQLite errors mean "retry" and which "stop". Everything the `Store` interface promises is
tests/support/store_contract.py, run here against real files by `TestSQLiteStoreContract`."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.model import Event, EventType
from bridge.store.base import (
    MUTED_KEPT,
    Muted,
    Store,
    StoreCorruptError,
    StoreError,
    StoreMaintenance,
    StoreUnavailableError,
    UndecodableDeliveries,
    maintenance,
    snapshot_severity,
)
from bridge.store.sqlite import SQLiteStore, _load_items_sql, migrations
from tests.support.store_contract import (
    StoreContract,
    StoreFactory,
    commit_events,
    run_sweep,
    silence_record,
)

from ._helpers import SCOPE, T0, item, make_event, sweep

LATEST = migrations()[-1][0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# Plain file fiddling for test setup (sync helpers: instant on a local tmp dir).
def chmod(path: Path, bits: int) -> None:
    path.chmod(bits)


def write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read through a separate connection (committed data only)."""
    conn = sqlite3.connect(path)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in ("items", "outbox", "dead_letters", "cursors", "sweeps")}
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a store that a test opens itself keeps its file (a directory not made yet); tests
    of an open store take the suite's `store` fixture (tests/conftest.py) and its `path`."""
    return tmp_path / "state" / "bridge.db"


class TestSQLiteStoreContract(StoreContract):
    @pytest.fixture
    def stores(self, db_path: Path) -> StoreFactory:
        return lambda: SQLiteStore(db_path)

    async def backend_state(self, store: Store) -> object:
        assert isinstance(store, SQLiteStore)
        return dump(store.path)


@contextlib.contextmanager
def locked(path: Path, how: str) -> Iterator[None]:
    """Another process's transaction holding `path`'s write lock (`how`: IMMEDIATE, EXCLUSIVE)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(f"BEGIN {how}")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


# -- files, permissions, versions --------------------------------------------------------------


async def test_new_file_and_wal_are_private(store: SQLiteStore) -> None:
    db_path = store.path
    assert mode(db_path) == 0o600
    await store.commit_sweep(commit_events((make_event("a"), ["siem"])))
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.exists(), "WAL mode: the -wal file exists while the store is open"
    assert mode(wal) == 0o600
    shm = db_path.with_name(db_path.name + "-shm")
    if shm.exists():
        assert mode(shm) == 0o600


async def test_looser_existing_file_is_tightened(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    first = SQLiteStore(db_path)
    await first.open()
    await first.close()
    chmod(db_path, 0o644)
    again = SQLiteStore(db_path)
    await again.open()
    try:
        assert mode(db_path) == 0o600
    finally:
        await again.close()


async def test_empty_world_readable_file_is_tightened_and_initialized(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    write_bytes(db_path, b"")
    chmod(db_path, 0o666)
    s = SQLiteStore(db_path)
    await s.open()
    await s.close()
    assert mode(db_path) == 0o600
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    conn.close()


async def test_schema_version_is_recorded_and_journal_is_wal(store: SQLiteStore) -> None:
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST >= 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"items", "outbox", "dead_letters", "cursors", "sweeps", "muted",
                          "silences", "sink_refs", "sqlite_sequence"}
    finally:
        conn.close()


async def test_a_version_1_file_is_migrated_with_its_queues(db_path: Path) -> None:
    """Version 1 kept bodies in a shared `events` table; version 2 moves them into the rows.
    Pending deliveries, dead letters and the sequence counter all survive."""
    a, b = make_event("a"), make_event("b", type_=EventType.CHANGED, counter=2,
                                        changes={"severity": ("low", "high")})
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    (_, v1), *_ = migrations()
    conn.executescript(v1)
    conn.execute("PRAGMA user_version = 1")
    conn.executemany("INSERT INTO events (id, body, created_at) VALUES (?,?,0)",
                     [(a.id, a.to_json()), (b.id, b.to_json())])
    conn.executemany("INSERT INTO outbox (sink, event_id, attempts, created_at) VALUES (?,?,?,0)",
                     [("siem", a.id, 2), ("jira", a.id, 0), ("siem", b.id, 0), ("jira", b.id, 0)])
    conn.execute("INSERT INTO dead_letters (seq, sink, event_id, attempts, error, failed_at) "
                 "SELECT seq, sink, event_id, 5, 'rejected', 0 FROM outbox WHERE seq = 4")
    conn.execute("DELETE FROM outbox WHERE seq = 4")
    conn.close()

    s = SQLiteStore(db_path)
    await s.open()
    try:
        siem = await s.claim("siem", 10)
        assert [(d.event, d.attempts) for d in siem] == [(a, 2), (b, 0)]
        assert [d.event for d in await s.claim("jira", 10)] == [a]
        (dead,) = await s.dead_letters()
        assert (dead.seq, dead.event, dead.attempts) == (4, b, 5)
        await s.commit_sweep(commit_events((make_event("c"), ["siem"])))
        assert [d.seq for d in await s.claim("siem", 10)] == [1, 3, 5]  # 4 is never reused
    finally:
        await s.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchall() == []
    conn.close()


async def test_newer_schema_is_refused(db_path: Path) -> None:
    s = SQLiteStore(db_path)
    await s.open()
    await s.close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {LATEST + 5}")
    conn.close()
    newer = SQLiteStore(db_path)
    with pytest.raises(StoreCorruptError) as err:  # too new to understand: stop
        await newer.open()
    msg = str(err.value)
    assert str(db_path) in msg
    assert f"schema version {LATEST + 5}" in msg and "newer" in msg
    await newer.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST + 5  # left untouched
    conn.close()


async def test_garbage_file_is_refused_with_its_path(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    write_bytes(db_path, b"this is not a database, just some bytes\x00\xff" * 200)
    s = SQLiteStore(db_path)
    with pytest.raises(StoreCorruptError) as err:
        await s.open()
    await s.close()
    msg = str(err.value)
    assert str(db_path) in msg
    assert "not a usable SQLite database" in msg or "corrupt" in msg
    assert "backup" in msg  # tells the operator what to do


async def test_damaged_pages_are_refused(db_path: Path) -> None:
    s = SQLiteStore(db_path)
    await s.open()
    for i in range(30):
        await run_sweep(s, sweep(*[item(f"{i}-{j}", title="x" * 200) for j in range(20)]),
                        now=T0 + timedelta(minutes=i))
    await s.close()
    data = bytearray(read_bytes(db_path))
    assert len(data) > 8 * 4096
    page = 4096
    for offset in range(2 * page, len(data) - page, 3 * page):  # smash many pages, keep page 1
        data[offset:offset + page] = os.urandom(page)
    write_bytes(db_path, bytes(data))
    broken = SQLiteStore(db_path)
    with pytest.raises(StoreCorruptError) as err:
        await broken.open()
    await broken.close()
    assert str(db_path) in str(err.value)


async def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    s = SQLiteStore(blocker / "sub" / "bridge.db")  # parent is a regular file
    with pytest.raises(StoreUnavailableError) as err:  # a path to fix, nothing damaged
        await s.open()
    await s.close()
    assert "cannot open state file" in str(err.value)


# -- which errors say "retry" and which say "stop" ---------------------------------------------


async def test_a_file_locked_by_another_process_is_unavailable_at_open(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    s = SQLiteStore(db_path, busy_timeout=0.05)
    with locked(db_path, "EXCLUSIVE"), pytest.raises(StoreUnavailableError) as err:
        await s.open()  # turning on WAL needs the lock the other process holds
    await s.close()
    msg = str(err.value)
    assert str(db_path) in msg and "locked" in msg and "not damaged" in msg
    assert "restore a backup" not in msg and "start fresh" not in msg
    again = SQLiteStore(db_path, busy_timeout=0.05)  # the lock is gone: it opens
    await again.open()
    await again.close()


async def test_a_commit_meeting_a_held_lock_is_unavailable_and_lands_once_it_is_gone(
        db_path: Path) -> None:
    s = SQLiteStore(db_path, busy_timeout=0.05)
    await s.open()
    try:
        commit = commit_events((make_event("a"), ["siem"]))
        with locked(db_path, "IMMEDIATE"), pytest.raises(StoreUnavailableError) as err:
            await s.commit_sweep(commit)
        assert str(err.value) == f"state commit failed for {SCOPE}: database is locked"
        assert await s.claim("siem", 10) == []
        await s.commit_sweep(commit)  # retried as it was: it lands
        assert len(await s.claim("siem", 10)) == 1
    finally:
        await s.close()


async def test_a_constraint_refused_commit_is_neither_unavailable_nor_corrupt(
        store: SQLiteStore) -> None:
    with pytest.raises(StoreError) as err:
        await store.commit_sweep(commit_events(cursor={"broken": None}))
    assert type(err.value) is StoreError
    assert "NOT NULL constraint failed: cursors.value" in str(err.value)


async def test_load_items_shares_equal_tracked_texts(store: SQLiteStore) -> None:
    """Items flagged by one check carry equal tracked values: one string for them all, not
    one per row (the diff compares them by value, so only memory can tell)."""
    await run_sweep(store, sweep(item("a", title="same"), item("b", title="same"),
                                 item("c", title="other")))
    loaded = (await store.load_items(SCOPE, ["finding"])).by_kind["finding"]
    assert loaded["a"].tracked is loaded["b"].tracked
    assert loaded["a"].tracked != loaded["c"].tracked


async def test_a_scope_is_read_in_file_order_whatever_the_statistics(store: SQLiteStore) -> None:
    """Loading a scope finds its rows' rowids in the unique index and reads the rows in rowid
    order, the order they were written, or (when statistics say the table is small or mostly
    this scope) scans the table: never a key-ordered lookup per row all over the file (3x
    slower at 100k items), with or without `ANALYZE`'s statistics (a daemon started on an
    empty file has none until it restarts)."""
    await run_sweep(store, sweep(item("a"), item("b")))
    await run_sweep(store, sweep(item("c"), scope="other"))
    assert set((await store.load_items(SCOPE, ["finding", "health"])).by_kind["finding"]) == {
        "a", "b"}
    conn = sqlite3.connect(store.path)
    try:
        for analyzed in (False, True):
            if analyzed:
                conn.execute("ANALYZE")
            plan = " / ".join(row[-1] for row in conn.execute(
                "EXPLAIN QUERY PLAN " + _load_items_sql(2), (SCOPE, "finding", "health")))
            assert "SEARCH items USING COVERING INDEX" in plan, plan
            assert " USING INDEX" not in plan, plan
    finally:
        conn.close()


def test_sqlite_offers_the_maintenance_commands(store: SQLiteStore) -> None:
    assert isinstance(store, StoreMaintenance)
    assert maintenance(store) is store


# -- damaged rows, attempts ---------------------------------------------------------------------


async def test_record_failure_keeps_the_last_error_cut_to_2000(store: SQLiteStore) -> None:
    """The outbox row remembers what went wrong last (for an operator reading the file)."""
    a = make_event("a")
    await store.commit_sweep(commit_events((a, ["siem"])))
    (da,) = await store.claim("siem", 10)
    await store.record_failure("siem", [da.seq], "receiver answered 503")
    await store.record_failure("siem", [da.seq], "receiver answered 502: " + "x" * 5000)
    conn = sqlite3.connect(store.path)
    (last_error,) = conn.execute("SELECT last_error FROM outbox WHERE seq = ?",
                                 (da.seq,)).fetchone()
    conn.close()
    assert last_error.startswith("receiver answered 502") and len(last_error) == 2000


def damage(db_path: Path, event: Event, body: str) -> None:
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE outbox SET body = ? WHERE event_id = ?", (body, event.id))
    conn.close()


@pytest.mark.parametrize("body", [
    '{"id": "cut short',  # not JSON
    '{"id": "x", "type": "new"}',  # JSON, not an event
], ids=["truncated", "not-an-event"])
async def test_an_undecodable_body_is_named_then_listed_as_a_dead_letter(
        store: SQLiteStore, body: str) -> None:
    a, b, c = make_event("a"), make_event("b"), make_event("c")
    await store.commit_sweep(commit_events((a, ["siem"]), (b, ["siem"]), (c, ["siem"])))
    seq_b = (await store.claim("siem", 3))[1].seq
    damage(store.path, b, body)
    with pytest.raises(UndecodableDeliveries) as caught:
        await store.claim("siem", 3)
    assert caught.value.rows == ((seq_b, b.id),)
    assert "outbox row(s) of siem" in str(caught.value)
    assert [d.event for d in await store.claim("siem", 1)] == [a]  # before the bad row: fine
    await store.bury("siem", [seq_b], f"undecodable event: {caught.value.error}")
    assert [d.event for d in await store.claim("siem", 3)] == [a, c]
    (dead,) = await store.dead_letters()
    assert (dead.seq, dead.event_id, dead.event) == (seq_b, b.id, None)


# -- maintenance: backup and check -------------------------------------------------------------


async def test_backup_is_a_private_consistent_copy(store: SQLiteStore, tmp_path: Path) -> None:
    await run_sweep(store, sweep(item("a"), item("b")), cursor={"scan": "7"})
    dest = tmp_path / "backups" / "copy.db"
    dest.parent.mkdir()
    await store.backup(dest)
    assert mode(dest) == 0o600
    assert not dest.with_name("copy.db.tmp").exists()
    # The live store keeps working after the backup and diverges from it.
    await run_sweep(store, sweep(item("c")))
    copy = SQLiteStore(dest)
    await copy.open()
    try:
        assert await copy.check() == []
        assert set(await copy.load_items(SCOPE, ["finding"])) == {("finding", "a"),
                                                                   ("finding", "b")}
        assert await copy.load_cursor(SCOPE) == {"scan": "7"}
        assert len(await copy.claim("siem", 10)) == 2
        assert len(await copy.sweeps()) == 1
    finally:
        await copy.close()
    assert len(await store.sweeps()) == 2


async def test_backup_overwrites_an_older_backup(store: SQLiteStore, tmp_path: Path) -> None:
    dest = tmp_path / "copy.db"
    dest.write_bytes(b"old junk")
    dest.chmod(0o644)
    await run_sweep(store, sweep(item("a")))
    await store.backup(dest)
    assert mode(dest) == 0o600
    conn = sqlite3.connect(dest)
    assert conn.execute("SELECT key FROM items").fetchall() == [("a",)]
    conn.close()


async def test_check_is_clean_on_a_sound_store(store: SQLiteStore) -> None:
    await run_sweep(store, sweep(item("a")))
    assert await store.check() == []


async def test_muted_rows_are_forgotten_after_90_days(store: SQLiteStore) -> None:
    """... except those of a silence not yet settled: it re-notifies their items when it ends."""
    old, fresh, elsewhere = make_event("old"), make_event("fresh"), make_event("x", scope="other")
    held, done = make_event("held"), make_event("done")
    await store.add_silence(silence_record("open"))
    await store.add_silence(silence_record("settled"))
    await store.settle_silence("settled", T0, [])
    await store.commit_chunk(SCOPE, [], [], [Muted.of(old, "siem", "baseline:suppress"),
                                             Muted.of(held, "siem", "silence", "open"),
                                             Muted.of(done, "siem", "silence", "settled")])
    await store.commit_chunk("other", [], [], [Muted.of(elsewhere, "siem", "baseline:suppress")])
    conn = sqlite3.connect(store.path)
    try:
        with conn:
            conn.execute("UPDATE muted SET recorded_at = recorded_at - ?",
                         ((MUTED_KEPT + timedelta(days=1)).total_seconds(),))
    finally:
        conn.close()
    await store.commit_chunk(SCOPE, [], [], [Muted.of(fresh, "siem", "baseline:suppress")])
    assert len(await store.muted()) == 5  # only a sweep's commit prunes
    await store.commit_sweep(commit_events())
    assert [m.key for m in await store.muted()] == ["fresh", "x", "held"]  # the sweep's scope


def test_rows_are_written_many_per_statement_exactly_as_given() -> None:
    """`_for_rows` (the store's bulk writes) steps once per statement, not once per row (see
    its docstring for why), within SQLite's parameter limit, and keeps every value as bound."""
    from bridge.store.sqlite import _ROWS_PER_STATEMENT, _for_rows

    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, text TEXT, big INTEGER, x REAL, maybe)")
    rows = [(n, f"row {n}\x00after a NUL é\U0001f600", 2**62 + n, n / 3, None if n % 2 else b"\x00")
            for n in range(_ROWS_PER_STATEMENT * 2 + 7)]
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    _for_rows(conn, "INSERT INTO t VALUES {rows}", rows)
    assert len(statements) == 2 + 3  # twice the most, then 4 + 2 + 1 rows
    assert conn.execute("SELECT * FROM t ORDER BY n").fetchall() == rows

    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 12)  # an old SQLite's smaller limit
    statements.clear()
    _for_rows(conn, "UPDATE t SET text = v.column2 FROM (VALUES {rows}) AS v WHERE t.n = v.column1",
              [(n, "updated") for n in range(13)])
    assert len(statements) == 3  # six rows of two parameters each a statement
    assert [r[0] for r in conn.execute("SELECT n FROM t WHERE text = 'updated'")] == list(range(13))
    statements.clear()
    _for_rows(conn, "INSERT INTO t VALUES {rows}", [])  # nothing to write: no statement
    assert statements == []


def test_bulk_statements_come_in_a_dozen_sizes_whatever_the_chunk_sizes() -> None:
    """sqlite3 keeps the statements it prepared (up to 128 a connection), and one of a thousand
    item rows takes ~1.7 MB: chunks of every size must not each leave one of their own."""
    from bridge.store.sqlite import _ROWS_PER_STATEMENT, _statement_sizes

    sizes: set[int] = set()
    for rows in range(1, 3 * _ROWS_PER_STATEMENT):
        split = list(_statement_sizes(rows, _ROWS_PER_STATEMENT))
        assert sum(split) == rows and max(split) <= _ROWS_PER_STATEMENT
        sizes.update(split)
    assert len(sizes) <= 11
    assert list(_statement_sizes(2_000, 1_000)) == [1_000, 1_000]  # a first sweep's chunk


@pytest.mark.parametrize(("snapshot", "severity"), [
    ('{"title": "t", "severity": "high", "raw": {"deep": [1, {"x": null}]}}', "high"),
    ('{"raw": {"severity": "critical"}}', ""),  # only the snapshot's own field counts
    ('{"severity": 5}', ""),
    ('{"severity": null}', ""),
    ("[1, 2]", ""),
    ('{"severity": "low", "raw": {', ""),  # not JSON: nothing is trusted
])
def test_the_severity_filtered_on_is_the_snapshots_own_string(snapshot: str,
                                                              severity: str) -> None:
    assert snapshot_severity(snapshot) == severity
