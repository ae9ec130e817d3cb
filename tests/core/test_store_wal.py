"""The SQLite store's write-ahead log: checkpointed late (bridge/store/sqlite.py `_WAL_BYTES`)
to spare the writer, yet bounded however long the daemon runs, and a crash still loses no
commit."""

from __future__ import annotations

from pathlib import Path

from bridge.diff import ItemWrite
from bridge.model import Event
from bridge.store.sqlite import SQLiteStore

from ._helpers import SCOPE, T0, make_event

PAGE = 32768  # what a new file gets (bridge/store/sqlite.py `_PAGE_SIZE`)
FRAME = PAGE + 24  # each WAL frame is a page and its header


def chunk(n: int, size: int) -> tuple[list[ItemWrite], list[tuple[Event, list[str]]]]:
    """`size` items of chunk `n`, each with a ~1 KB snapshot and an event routed to "siem"."""
    keys = [f"{n:04d}-{i:04d}" for i in range(size)]
    pad = "x" * 1000
    writes = [ItemWrite("finding", k, "active", 1, 0, T0, T0, "[]", f'{{"pad":"{pad}"}}')
              for k in keys]
    return writes, [(make_event(k, attributes={"pad": pad}), ["siem"]) for k in keys]


async def test_the_wal_stays_bounded_while_chunks_commit_and_deliveries_are_acked(
        tmp_path: Path) -> None:
    """A long run of commits and acknowledgements (a first sweep, then months of them): once
    the WAL holds `checkpoint_pages` frames a commit copies it into the file and the next write
    starts it over, so it never holds much more than that plus the commits in between."""
    path = tmp_path / "bridge.db"
    store = SQLiteStore(path, checkpoint_pages=50)
    await store.open()
    wal = path.with_name(path.name + "-wal")
    largest = 0
    try:
        for n in range(60):  # ~15 MB of WAL in all: 20 times the bound
            writes, deliveries = chunk(n, 60)
            await store.commit_chunk(SCOPE, writes, deliveries)
            largest = max(largest, wal.stat().st_size)
            batch = await store.claim("siem", 1000)
            assert len(batch) == 60
            await store.ack("siem", [d.seq for d in batch])
            largest = max(largest, wal.stat().st_size)
        assert await store.claim("siem", 1000) == []
        assert len(await store.load_items(SCOPE, ["finding"])) == 60 * 60
    finally:
        await store.close()
    # One chunk is ~5 pages of items, ~5 of outbox rows and a few of index; an ack as many.
    assert largest <= (50 + 2 * 30) * FRAME, f"the WAL grew to {largest} bytes"
    assert not wal.exists(), "closing checkpoints the whole WAL and removes it"


async def test_commits_past_the_last_checkpoint_outlive_a_crash(tmp_path: Path) -> None:
    """With checkpoints rarer, most commits live only in the WAL until one comes: a process
    that dies without closing leaves them there, and the next open reads them back."""
    path = tmp_path / "bridge.db"
    store = SQLiteStore(path)  # the default threshold: nothing below is checkpointed
    await store.open()
    for n in range(5):
        writes, deliveries = chunk(n, 40)
        await store.commit_chunk(SCOPE, writes, deliveries)
    # A copy of the files as a killed process leaves them (the WAL not checkpointed, the
    # store not closed), opened by a new store.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-wal"):
        (crashed / f"bridge.db{suffix}").write_bytes(path.with_name(path.name + suffix).read_bytes())
    await store.close()
    # The commits are there: 200 items and their events, ~2 KB each, none yet in the file.
    assert (crashed / "bridge.db-wal").stat().st_size > 200 * 2000
    again = SQLiteStore(crashed / "bridge.db")
    await again.open()
    try:
        assert len(await again.load_items(SCOPE, ["finding"])) == 200
        assert len(await again.claim("siem", 1000)) == 200
    finally:
        await again.close()


async def test_a_new_file_has_32k_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """`_PAGE_SIZE` applies to a file this version creates; a file made with SQLite's 4 KiB
    pages keeps them (and works as before), and either checkpoints at 40 MiB of WAL."""
    import sqlite3

    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE made_before (x)")  # a 4 KiB-page file, as older versions made
    conn.close()
    for path, page in ((tmp_path / "new.db", PAGE), (old, 4096)):
        store = SQLiteStore(path)
        await store.open()
        writes, deliveries = chunk(0, 10)
        await store.commit_chunk(SCOPE, writes, deliveries)
        assert len(await store.claim("siem", 100)) == 10
        settings = await store._run(lambda conn: (
            conn.execute("PRAGMA page_size").fetchone()[0],
            conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]))
        await store.close()
        assert settings == (page, 40 * 1024 * 1024 // page)
