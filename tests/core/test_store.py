"""The SQLite store, on real files: permissions, schema versions, corruption, one-transaction
sweeps, the outbox (claim/ack/failure/bury/replay), stats, backup and inspection."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.diff import Differ, DiffPolicy, ItemWrite, diff
from bridge.model import Event, EventType
from bridge.store.base import StoreError, SweepCommit, SweepRecord, UndecodableDeliveries
from bridge.store.sqlite import SQLiteStore, migrations

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


def record(outcome: str = "complete", **kw: Any) -> SweepRecord:
    kw.setdefault("started_at", T0)
    kw.setdefault("finished_at", T0 + timedelta(seconds=3))
    return SweepRecord(scope=kw.pop("scope", SCOPE), source="so", outcome=outcome,  # type: ignore[arg-type]
                       **kw)


def commit_events(*pairs: tuple[Event, Sequence[str]], **kw: Any) -> SweepCommit:
    return SweepCommit(record=record(events=len(pairs)), deliveries=list(pairs), **kw)


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
    return tmp_path / "state" / "bridge.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(db_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def run_sweep(store: SQLiteStore, s: Any, sinks: Sequence[str] = ("siem",),
                    now: Any = T0, cursor: dict[str, str] | None = None) -> list[Event]:
    """The daemon's path in miniature: load, diff, commit."""
    stored = await store.load_items(s.scope, list(s.kinds))
    differ = Differ(stored, DiffPolicy(), scope=s.scope, source="so", vendor="scanorbit", now=now)
    differ.feed(s.items)
    differ.finish(s.kinds, await store.load_snapshots(s.scope, differ.absentees(s.kinds)))
    writes, events = differ.take()
    await store.commit_sweep(SweepCommit(
        record=record(items_seen=len(differ.seen), events=len(events), scope=s.scope),
        writes=writes, deliveries=[(e, list(sinks)) for e in events], cursor=cursor or {}))
    return events


# -- files, permissions, versions --------------------------------------------------------------


async def test_new_file_and_wal_are_private(store: SQLiteStore, db_path: Path) -> None:
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


async def test_schema_version_is_recorded_and_journal_is_wal(store: SQLiteStore,
                                                             db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST >= 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"items", "outbox", "dead_letters", "cursors", "sweeps", "sqlite_sequence"}
    finally:
        conn.close()


async def test_reopen_keeps_state_and_does_not_migrate_again(db_path: Path) -> None:
    s = SQLiteStore(db_path)
    await s.open()
    await run_sweep(s, sweep(item("a")), cursor={"scan": "s1"})
    await s.close()
    s = SQLiteStore(db_path)
    await s.open()
    try:
        assert set(await s.load_items(SCOPE, ["finding"])) == {("finding", "a")}
        assert await s.load_cursor(SCOPE) == {"scan": "s1"}
        assert len(await s.claim("siem", 10)) == 1
    finally:
        await s.close()


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
    with pytest.raises(StoreError) as err:
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
    with pytest.raises(StoreError) as err:
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
    with pytest.raises(StoreError) as err:
        await broken.open()
    await broken.close()
    assert str(db_path) in str(err.value)


async def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    s = SQLiteStore(blocker / "sub" / "bridge.db")  # parent is a regular file
    with pytest.raises(StoreError) as err:
        await s.open()
    await s.close()
    assert "cannot open state file" in str(err.value)


# -- sweeps ------------------------------------------------------------------------------------


async def test_commit_sweep_writes_everything(store: SQLiteStore, db_path: Path) -> None:
    events = await run_sweep(store, sweep(item("a"), item("b")), sinks=("siem", "jira"),
                             cursor={"last_scan": "scan-9"})
    assert [e.type for e in events] == [EventType.NEW, EventType.NEW]
    stored = await store.load_items(SCOPE, ["finding"])
    assert {k: (v.state, v.counter, v.misses) for k, v in stored.items()} == {
        ("finding", "a"): ("active", 1, 0), ("finding", "b"): ("active", 1, 0)}
    snaps = await store.load_snapshots(SCOPE, [("finding", "a"), ("finding", "nope")])
    assert set(snaps) == {("finding", "a")}
    assert stored[("finding", "a")].as_item(snaps[("finding", "a")]).title == "finding a"
    assert await store.load_cursor(SCOPE) == {"last_scan": "scan-9"}
    assert await store.load_cursor("other") == {}
    rows = dump(db_path)
    assert len(rows["outbox"]) == 4 and len(rows["sweeps"]) == 1
    for sink in ("siem", "jira"):
        assert [d.event for d in await store.claim(sink, 10)] == events


async def test_load_items_filters_scope_and_kind(store: SQLiteStore) -> None:
    await run_sweep(store, sweep(item("f"), item("s", kind="score"),
                                 kinds={"finding": True, "score": True}))
    await run_sweep(store, sweep(item("o"), scope="other"))
    assert set(await store.load_items(SCOPE, ["finding"])) == {("finding", "f")}
    assert set(await store.load_items(SCOPE, ["finding", "score"])) == {
        ("finding", "f"), ("score", "s")}
    assert await store.load_items(SCOPE, []) == {}
    assert set(await store.load_items("other", ["finding"])) == {("finding", "o")}


async def test_full_history_round_trips_through_the_store(store: SQLiteStore) -> None:
    """Partial writes (miss counts, miss resolution) keep the snapshot; reopen rewrites it."""
    kinds = [EventType.NEW]
    await run_sweep(store, sweep(item("a", severity="low", title="first")))
    kinds += [e.type for e in await run_sweep(store, sweep(item("a", severity="high",
                                                                title="first")))]
    kinds += [e.type for e in await run_sweep(store, sweep())]
    row = (await store.load_items(SCOPE, ["finding"]))[("finding", "a")]
    assert (row.state, row.misses, row.counter) == ("active", 1, 2)
    resolved = await run_sweep(store, sweep())
    kinds += [e.type for e in resolved]
    assert resolved[0].severity == "high" and resolved[0].title == "first"
    row = (await store.load_items(SCOPE, ["finding"]))[("finding", "a")]
    assert (row.state, row.counter) == ("resolved", 3)
    snap = (await store.load_snapshots(SCOPE, [("finding", "a")]))[("finding", "a")]
    assert row.as_item(snap).severity == "high"  # the partial writes kept the snapshot
    kinds += [e.type for e in await run_sweep(store, sweep(item("a", title="second")))]
    row = (await store.load_items(SCOPE, ["finding"]))[("finding", "a")]
    assert (row.state, row.counter, row.misses) == ("active", 4, 0)
    snap = (await store.load_snapshots(SCOPE, [("finding", "a")]))[("finding", "a")]
    assert row.as_item(snap).title == "second"
    assert kinds == [EventType.NEW, EventType.CHANGED, EventType.RESOLVED, EventType.REOPENED]
    (listed,) = await store.items(SCOPE)
    assert listed["resolved_at"] is None  # cleared by the reopen
    assert listed["first_seen"] == T0.isoformat()


async def test_events_routed_nowhere_are_not_stored(store: SQLiteStore, db_path: Path) -> None:
    await store.commit_sweep(commit_events((make_event("a"), []), (make_event("b"), ["siem"])))
    rows = dump(db_path)
    assert len(rows["outbox"]) == 1
    assert [d.event.key for d in await store.claim("siem", 10)] == ["b"]


def _bad_state_write() -> ItemWrite:
    return ItemWrite("finding", "a", "exploded", 9, 0, T0, T0)  # type: ignore[arg-type]


@pytest.mark.parametrize("breakage", ["item_state", "cursor_value"])
async def test_failed_commit_changes_nothing(store: SQLiteStore, db_path: Path,
                                             breakage: str) -> None:
    await run_sweep(store, sweep(item("a"), item("b")), cursor={"scan": "1"})
    before = dump(db_path)
    good = list(diff(await store.load_items(SCOPE, ["finding"]),
                     sweep(item("a", severity="critical"), item("c")), DiffPolicy(),
                     source="so", vendor="scanorbit", now=T0).writes)
    events = [make_event("c"), make_event("a", type_=EventType.CHANGED, counter=2)]
    if breakage == "item_state":
        # The full upserts, then a partial update that breaks the CHECK on `state`.
        commit = SweepCommit(record=record(), writes=[*good, _bad_state_write()],
                             deliveries=[(e, ["siem", "jira"]) for e in events],
                             cursor={"scan": "2"})
    else:
        # Items, events and outbox rows are all written before the cursor hits NOT NULL.
        commit = SweepCommit(record=record(), writes=good,
                             deliveries=[(e, ["siem", "jira"]) for e in events],
                             cursor={"scan": "2", "broken": None})  # type: ignore[dict-item]
    with pytest.raises(StoreError) as err:
        await store.commit_sweep(commit)
    assert "state commit failed" in str(err.value) and SCOPE in str(err.value)
    assert dump(db_path) == before
    # The store is still usable: the same sweep, minus the breakage, commits.
    ok = SweepCommit(record=record(), writes=good,
                     deliveries=[(e, ["siem"]) for e in events], cursor={"scan": "2"})
    await store.commit_sweep(ok)
    after = dump(db_path)
    assert len(after["sweeps"]) == 2 and len(after["items"]) == 3
    assert await store.load_cursor(SCOPE) == {"scan": "2"}


# -- the outbox --------------------------------------------------------------------------------


async def test_claim_order_is_commit_order_per_sink(store: SQLiteStore) -> None:
    e1, e2, e3, e4 = (make_event(k) for k in ("k1", "k2", "k3", "k4"))
    await store.commit_sweep(commit_events((e1, ["siem", "jira"]), (e2, ["siem"])))
    await store.commit_sweep(commit_events((e3, ["jira"]), (e4, ["siem", "jira"])))
    assert [d.event.id for d in await store.claim("siem", 10)] == [e1.id, e2.id, e4.id]
    assert [d.event.id for d in await store.claim("jira", 10)] == [e1.id, e3.id, e4.id]
    assert [d.event.id for d in await store.claim("siem", 2)] == [e1.id, e2.id]
    assert await store.claim("nobody", 10) == []
    # Claiming does not consume: nothing is lost if the worker dies before acking.
    assert len(await store.claim("siem", 10)) == 3
    seqs = [d.seq for d in await store.claim("siem", 10)]
    assert seqs == sorted(seqs)
    assert all(d.attempts == 0 and d.sink == "siem" for d in await store.claim("siem", 10))


async def test_claimed_event_equals_committed_event(store: SQLiteStore) -> None:
    ev = make_event("k", type_=EventType.CHANGED, counter=2,
                    changes={"severity": ("low", "high")}, attributes={"region": "eu", "n": 3},
                    raw={"nested": {"a": [1, 2]}}, tenant="acme", reason="changed: severity")
    await store.commit_sweep(commit_events((ev, ["siem"])))
    (d,) = await store.claim("siem", 1)
    assert d.event == ev


async def test_ack_removes_only_the_acknowledged_rows(store: SQLiteStore, db_path: Path) -> None:
    shared, solo, doomed = make_event("shared"), make_event("solo"), make_event("doomed")
    await store.commit_sweep(commit_events((shared, ["siem", "jira"]), (solo, ["siem"]),
                                           (doomed, ["siem", "jira"])))
    jira = {d.event.key: d.seq for d in await store.claim("jira", 10)}
    await store.bury("jira", [jira["doomed"]], "rejected: 400")
    siem = await store.claim("siem", 10)
    await store.ack("siem", [d.seq for d in siem])
    assert await store.claim("siem", 10) == []
    # Each row carries its body: what jira still has to deliver (and its dead letter) is
    # whole, and nothing of what siem delivered is left behind.
    assert [d.event for d in await store.claim("jira", 10)] == [shared]
    assert [d.event for d in await store.dead_letters("jira")] == [doomed]
    rows = dump(db_path)
    assert {(r[1], r[2]) for r in rows["outbox"]} == {("jira", shared.id)}
    await store.ack("jira", [jira["shared"]])
    assert dump(db_path)["outbox"] == []


async def test_claims_and_acks_beyond_a_parameter_list(store: SQLiteStore) -> None:
    events = [make_event(f"k{i}") for i in range(1_200)]
    await store.commit_sweep(commit_events(*[(e, ["siem"]) for e in events]))
    claimed = await store.claim("siem", 1_200)
    assert [d.event.key for d in claimed] == [e.key for e in events]
    await store.ack("siem", [d.seq for d in claimed[:1_100]])
    assert [d.event.key for d in await store.claim("siem", 1_200)] == [f"k{i}" for i in range(1_100, 1_200)]


async def test_claim_after_a_seq_skips_what_is_in_flight(store: SQLiteStore) -> None:
    events = [make_event(f"k{i}") for i in range(5)]
    await store.commit_sweep(commit_events(*[(e, ["siem"]) for e in events]))
    first = await store.claim("siem", 2)
    assert [d.event.key for d in await store.claim("siem", 2, after=first[-1].seq)] == ["k2", "k3"]
    assert await store.claim("siem", 2, after=10**9) == []


async def test_ack_is_scoped_to_its_sink(store: SQLiteStore) -> None:
    ev = make_event("x")
    await store.commit_sweep(commit_events((ev, ["siem", "jira"])))
    (siem,) = await store.claim("siem", 1)
    await store.ack("jira", [siem.seq])  # wrong sink: must not delete siem's row
    assert len(await store.claim("siem", 10)) == 1
    assert len(await store.claim("jira", 10)) == 1


async def test_record_failure_counts_attempts(store: SQLiteStore, db_path: Path) -> None:
    a, b = make_event("a"), make_event("b")
    await store.commit_sweep(commit_events((a, ["siem"]), (b, ["siem"])))
    da, _db = await store.claim("siem", 10)
    await store.record_failure("siem", [da.seq], "receiver answered 503")
    await store.record_failure("siem", [da.seq], "receiver answered 502: " + "x" * 5000)
    attempts = {d.event.key: d.attempts for d in await store.claim("siem", 10)}
    assert attempts == {"a": 2, "b": 0}
    conn = sqlite3.connect(db_path)
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
        store: SQLiteStore, db_path: Path, body: str) -> None:
    a, b, c = make_event("a"), make_event("b"), make_event("c")
    await store.commit_sweep(commit_events((a, ["siem"]), (b, ["siem"]), (c, ["siem"])))
    seq_b = (await store.claim("siem", 3))[1].seq
    damage(db_path, b, body)
    with pytest.raises(UndecodableDeliveries) as caught:
        await store.claim("siem", 3)
    assert caught.value.rows == ((seq_b, b.id),)
    assert "outbox row(s) of siem" in str(caught.value)
    assert [d.event for d in await store.claim("siem", 1)] == [a]  # before the bad row: fine
    await store.bury("siem", [seq_b], f"undecodable event: {caught.value.error}")
    assert [d.event for d in await store.claim("siem", 3)] == [a, c]
    (dead,) = await store.dead_letters()
    assert (dead.seq, dead.event_id, dead.event) == (seq_b, b.id, None)


async def test_bury_moves_to_dead_letters(store: SQLiteStore) -> None:
    a, b = make_event("a"), make_event("b")
    await store.commit_sweep(commit_events((a, ["siem"]), (b, ["siem"])))
    da, _ = await store.claim("siem", 10)
    await store.record_failure("siem", [da.seq], "503")
    await store.bury("siem", [da.seq], "gave up after 2 attempts: 503")
    assert [d.event.key for d in await store.claim("siem", 10)] == ["b"]
    (dead,) = await store.dead_letters()
    assert (dead.seq, dead.sink, dead.event_id, dead.event, dead.attempts) == (da.seq, "siem", a.id, a, 2)
    assert dead.error == "gave up after 2 attempts: 503"
    assert dead.failed_at.tzinfo is not None
    assert await store.dead_letters("jira") == []
    assert len(await store.dead_letters("siem")) == 1


async def test_dead_letters_filter_and_limit(store: SQLiteStore) -> None:
    evs = [make_event(f"k{i}") for i in range(5)]
    await store.commit_sweep(commit_events(*[(e, ["siem", "jira"]) for e in evs]))
    for sink in ("siem", "jira"):
        await store.bury(sink, [d.seq for d in await store.claim(sink, 10)], "400")
    assert len(await store.dead_letters()) == 10
    assert len(await store.dead_letters(limit=3)) == 3
    assert [d.event.key for d in await store.dead_letters("jira")] == [e.key for e in evs]


async def test_replay_puts_dead_letters_at_the_end_with_attempts_reset(
        store: SQLiteStore) -> None:
    a, b, c = make_event("a"), make_event("b"), make_event("c")
    await store.commit_sweep(commit_events((a, ["siem", "jira"]), (b, ["siem"])))
    da = (await store.claim("siem", 1))[0]
    await store.record_failure("siem", [da.seq], "503")
    await store.bury("siem", [da.seq], "gave up")
    jira_a = (await store.claim("jira", 1))[0]
    await store.bury("jira", [jira_a.seq], "rejected")
    await store.commit_sweep(commit_events((c, ["siem"])))
    assert await store.replay("siem") == 1  # only siem's
    queue = await store.claim("siem", 10)
    assert [d.event.key for d in queue] == ["b", "c", "a"]
    assert queue[-1].attempts == 0 and queue[-1].seq > queue[-2].seq
    assert [d.sink for d in await store.dead_letters()] == ["jira"]
    assert await store.replay("siem") == 0


async def test_replay_selected_seqs(store: SQLiteStore) -> None:
    evs = [make_event(f"k{i}") for i in range(3)]
    await store.commit_sweep(commit_events(*[(e, ["siem"]) for e in evs]))
    seqs = [d.seq for d in await store.claim("siem", 10)]
    await store.bury("siem", seqs, "400")
    assert await store.replay(seqs=[seqs[2], seqs[0]]) == 2
    assert [d.event.key for d in await store.claim("siem", 10)] == ["k0", "k2"]
    assert [d.event.key for d in await store.dead_letters()] == ["k1"]
    assert await store.replay(seqs=[123456]) == 0


async def test_replayed_then_acked_leaves_nothing(store: SQLiteStore, db_path: Path) -> None:
    ev = make_event("a")
    await store.commit_sweep(commit_events((ev, ["siem"])))
    await store.bury("siem", [(await store.claim("siem", 1))[0].seq], "400")
    await store.replay()
    (replayed,) = await store.claim("siem", 1)
    assert replayed.event == ev
    await store.ack("siem", [replayed.seq])
    rows = dump(db_path)
    assert rows["outbox"] == [] and rows["dead_letters"] == []


async def test_queue_stats(store: SQLiteStore) -> None:
    assert await store.queue_stats() == []
    evs = [make_event(f"k{i}") for i in range(4)]
    await store.commit_sweep(commit_events(*[(e, ["siem"]) for e in evs],
                                           (evs[0], ["jira"])))
    await store.bury("siem", [(await store.claim("siem", 1))[0].seq], "400")
    stats = {s.sink: s for s in await store.queue_stats()}
    assert (stats["siem"].depth, stats["siem"].dead) == (3, 1)
    assert (stats["jira"].depth, stats["jira"].dead) == (1, 0)
    assert stats["siem"].oldest_created_at is not None
    await store.ack("jira", [(await store.claim("jira", 1))[0].seq])
    await store.ack("siem", [d.seq for d in await store.claim("siem", 10)])
    stats = {s.sink: s for s in await store.queue_stats()}
    assert set(stats) == {"siem"}  # jira has nothing pending and nothing dead
    assert (stats["siem"].depth, stats["siem"].oldest_created_at, stats["siem"].dead) == (
        0, None, 1)


# -- backup and inspection ---------------------------------------------------------------------


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


async def test_items_inspection(store: SQLiteStore) -> None:
    await run_sweep(store, sweep(item("a", title="A"), item("b", severity="low")), now=T0)
    await run_sweep(store, sweep(item("a", title="A"), item("b", severity="low", active=False)),
                    now=T0 + timedelta(minutes=1))
    await run_sweep(store, sweep(item("z"), scope="other"), now=T0 + timedelta(minutes=2))
    rows = await store.items()
    assert [(r["scope"], r["key"]) for r in rows] == [("other", "z"), (SCOPE, "b"),
                                                       (SCOPE, "a")]  # newest change first
    assert [r["key"] for r in await store.items(scope=SCOPE)] == ["b", "a"]
    (b,) = await store.items(state="resolved")
    assert (b["key"], b["state"], b["counter"], b["severity"]) == ("b", "resolved", 2, "low")
    assert b["resolved_at"] == (T0 + timedelta(minutes=1)).isoformat()
    (a,) = await store.items(scope=SCOPE, state="active")
    assert (a["title"], a["severity"], a["misses"]) == ("A", "high", 0)
    assert len(await store.items(limit=1)) == 1
    assert sorted(await store.item_counts()) == [("other", "finding", "active", 1),
                                                 (SCOPE, "finding", "active", 1),
                                                 (SCOPE, "finding", "resolved", 1)]


async def test_sweeps_inspection(store: SQLiteStore) -> None:
    await store.commit_sweep(SweepCommit(record=record(items_seen=5, events=2, requests=3,
                                                       notes=("page 2 drifted",))))
    await store.commit_sweep(SweepCommit(record=record("failed", error="401 unauthorized")))
    await store.commit_sweep(SweepCommit(record=record("skipped", scope="other")))
    rows = await store.sweeps()
    assert [r.outcome for r in rows] == ["skipped", "failed", "complete"]  # newest first
    first = rows[-1]
    assert (first.items_seen, first.events, first.requests, first.notes, first.error) == (
        5, 2, 3, ("page 2 drifted",), None)
    assert first.started_at == T0 and first.finished_at == T0 + timedelta(seconds=3)
    assert rows[1].error == "401 unauthorized"
    assert [r.outcome for r in await store.sweeps(scope=SCOPE)] == ["failed", "complete"]
    assert len(await store.sweeps(limit=1)) == 1
    assert rows[0].id is not None and rows[0].id > rows[1].id


async def test_check_is_clean_on_a_sound_store(store: SQLiteStore) -> None:
    await run_sweep(store, sweep(item("a")))
    assert await store.check() == []


async def test_commit_chunk_writes_items_with_their_outbox_rows_only(store: SQLiteStore,
                                                                     db_path: Path) -> None:
    r = diff({}, sweep(item("a"), item("b")), DiffPolicy(), source="so", vendor="scanorbit",
             now=T0)
    await store.commit_chunk(SCOPE, r.writes, [(e, ["siem"]) for e in r.events])
    rows = dump(db_path)
    assert len(rows["items"]) == 2 and len(rows["outbox"]) == 2
    assert rows["sweeps"] == [] and rows["cursors"] == []
    assert [d.event for d in await store.claim("siem", 10)] == r.events


async def test_failed_chunk_changes_nothing(store: SQLiteStore, db_path: Path) -> None:
    await run_sweep(store, sweep(item("a")))
    before = dump(db_path)
    r = diff({}, sweep(item("b"), item("c")), DiffPolicy(), source="so", vendor="scanorbit",
             now=T0)
    with pytest.raises(StoreError):
        await store.commit_chunk(SCOPE, [*r.writes, _bad_state_write()],
                                 [(e, ["siem"]) for e in r.events])
    assert dump(db_path) == before


async def test_sweep_log_keeps_the_last_1000_per_scope(store: SQLiteStore) -> None:
    # Two scopes sweeping alternately: 1,200 records in all, 600 each; none may be pruned.
    for _ in range(600):
        for scope in ("busy", "quiet"):
            await store.commit_sweep(SweepCommit(record=record(scope=scope)))
    assert len(await store.sweeps("quiet", limit=5000)) == 600
    assert len(await store.sweeps("busy", limit=5000)) == 600
    for _ in range(450):
        await store.commit_sweep(SweepCommit(record=record(scope="busy")))
    busy = await store.sweeps("busy", limit=5000)
    assert len(busy) == 1000
    assert len(await store.sweeps("quiet", limit=5000)) == 600


async def test_a_miss_is_not_a_change(store: SQLiteStore) -> None:
    """Counting a miss keeps `changed_at`; the resolution that follows moves it."""
    await run_sweep(store, sweep(item("a")), now=T0)
    await run_sweep(store, sweep(), now=T0 + timedelta(minutes=5))
    (row,) = await store.items(SCOPE)
    assert (row["misses"], row["changed_at"]) == (1, T0.isoformat())
    later = T0 + timedelta(minutes=10)
    await run_sweep(store, sweep(), now=later)
    (row,) = await store.items(SCOPE)
    assert (row["state"], row["changed_at"]) == ("resolved", later.isoformat())


async def test_a_closed_store_says_so(db_path: Path) -> None:
    s = SQLiteStore(db_path)
    await s.open()
    await s.close()
    with pytest.raises(StoreError, match="not open"):
        await s.load_cursor(SCOPE)
