"""Stored items kept from one sweep to the next (bridge/store/kept.py): what a load hands out
must always be what the file holds. Checked against a second store on the same file, which
keeps nothing of its own yet, after sweeps that create, change, miss and resolve items; after
another process writes the file; and after a commit that failed."""

from __future__ import annotations

import dataclasses
import random
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.diff import ItemWrite, StoredItem, StoredItems
from bridge.store.base import ItemRecord, StoreError, SweepCommit
from bridge.store.kept import KEEP_AT_MOST, PENDING_AT_MOST, KeptItems, applied
from bridge.store.memory import apply_item_writes
from bridge.store.sqlite import SQLiteStore
from tests.support.store_contract import record, run_sweep

from ._helpers import SCOPE, T0, item, sweep

KINDS = ["finding", "health"]


async def on_file(path: Path) -> dict[tuple[str, str], StoredItem]:
    """The scope's items as a store that has kept nothing reads them from the file."""
    other = SQLiteStore(path)
    await other.open()
    try:
        return dict(await other.load_items(SCOPE, KINDS))
    finally:
        await other.close()


async def test_what_a_load_hands_out_is_what_the_file_holds_after_every_sweep(
        store: SQLiteStore) -> None:
    rng = random.Random(23)
    for n in range(25):
        keys = rng.sample(range(80), rng.randrange(20, 70))
        items = [item(f"k{k}", title=f"t{rng.randrange(3)}", active=rng.random() > 0.15,
                      kind=rng.choice(KINDS) if k % 2 else "finding") for k in keys]
        kinds = {"finding": rng.random() > 0.2, "health": True}
        await run_sweep(store, sweep(*items, kinds=kinds), now=T0 + timedelta(minutes=n))
        assert dict(await store.load_items(SCOPE, KINDS)) == await on_file(store.path), n
        # The same sweep again: nothing changes, and what is kept still matches the file.
        await run_sweep(store, sweep(*items, kinds=kinds),
                        now=T0 + timedelta(minutes=n, seconds=30))
        assert dict(await store.load_items(SCOPE, KINDS)) == await on_file(store.path), n


async def test_an_unchanged_scope_is_not_read_again_and_what_was_handed_out_never_changes(
        store: SQLiteStore) -> None:
    await run_sweep(store, sweep(item("a"), item("b")))
    first = await store.load_items(SCOPE, ["finding"])
    assert await store.load_items(SCOPE, ["finding"]) is first
    before = dict(first)
    await run_sweep(store, sweep(item("a", title="renamed"), item("c")),
                    now=T0 + timedelta(minutes=1))
    after = await store.load_items(SCOPE, ["finding"])
    assert after is not first and dict(first) == before  # the old one is as it was
    assert after[("finding", "a")].tracked != before[("finding", "a")].tracked
    assert after[("finding", "b")].misses == 1 and ("finding", "c") in after
    assert dict(after) == {k: v for k, v in (await on_file(store.path)).items()
                           if k[0] == "finding"}


async def test_a_write_by_another_process_is_seen_at_the_next_load(store: SQLiteStore) -> None:
    """`bridge once` by hand, or a second daemon, commits through a connection of its own:
    the store must read the file again rather than hand out what it kept."""
    other = SQLiteStore(store.path)
    await other.open()
    try:
        await run_sweep(store, sweep(item("a"), item("b")))
        assert set(await store.load_items(SCOPE, ["finding"])) == {("finding", "a"),
                                                                   ("finding", "b")}
        await run_sweep(other, sweep(item("a"), item("z")), now=T0 + timedelta(minutes=1))
        seen = await store.load_items(SCOPE, ["finding"])
        assert ("finding", "z") in seen and seen[("finding", "b")].misses == 1
    finally:
        await other.close()


async def test_a_failed_commit_leaves_nothing_of_its_writes_in_what_is_handed_out(
        store: SQLiteStore) -> None:
    await run_sweep(store, sweep(item("a")))
    old = (await store.load_items(SCOPE, ["finding"]))[("finding", "a")]
    write = ItemWrite("finding", "a", "resolved", old.counter + 1, 0, old.first_seen, T0,
                      old.tracked, "{}", T0)
    with pytest.raises(StoreError, match="NOT NULL"):  # refused after the rows were written
        await store.commit_sweep(SweepCommit(record=record(), writes=[write],
                                             cursor={"broken": None}))  # type: ignore[dict-item]
    assert (await store.load_items(SCOPE, ["finding"]))[("finding", "a")].state == "active"
    assert dict(await store.load_items(SCOPE, ["finding"])) == await on_file(store.path)


# -- KeptItems and `applied`, on their own --------------------------------------------------------

def stored(key: str, kind: str = "finding", **kw: object) -> StoredItem:
    return dataclasses.replace(StoredItem(kind, key, "active", '["t"]', 1, 0, T0), **kw)


def items_of(*rows: StoredItem) -> StoredItems:
    return StoredItems.of({(r.kind, r.key): r for r in rows})


def test_applied_follows_every_stores_rules() -> None:
    """Random commits of random writes applied to kept items give what `apply_item_writes`
    (the rules the memory store runs, and the SQL of the others mirrors), commit by commit,
    gives the same rows."""
    rng = random.Random(5)
    for _ in range(200):
        start = [stored(f"k{i}", kind=rng.choice(KINDS), counter=rng.randrange(1, 4),
                        misses=rng.randrange(3), state=rng.choice(["active", "resolved"]))
                 for i in rng.sample(range(12), rng.randrange(0, 10))]
        commits = []  # a key may be written again by a later commit, never twice in one
        for _ in range(rng.randrange(1, 4)):
            writes = []
            for key in rng.sample(range(14), rng.randrange(0, 10)):
                full = rng.random() > 0.4
                writes.append(ItemWrite(
                    rng.choice([*KINDS, "score"]), f"k{key}", rng.choice(["active", "resolved"]),
                    rng.randrange(1, 6), rng.randrange(3), T0 + timedelta(days=1), T0,
                    f'["t{rng.randrange(3)}"]' if full else None, "{}" if full else None))
            commits.append(writes)
        records = {(r.kind, r.key): ItemRecord(SCOPE, r.kind, r.key, r.state, r.tracked,
                                               r.counter, r.misses, r.first_seen, T0, None, "{}")
                   for r in start}
        for writes in commits:
            apply_item_writes(records, SCOPE, writes)
        expected = {k: r.stored() for k, r in records.items() if k[0] in KINDS}
        assert dict(applied(items_of(*start), commits, KINDS)) == expected


def test_kept_items_are_bounded_and_dropped_on_a_new_version_or_other_kinds() -> None:
    kept = KeptItems()
    one = items_of(stored("a"))
    assert kept.get(SCOPE, ["finding"], 1) is None
    kept.keep(SCOPE, ["finding"], 1, one)
    assert kept.get(SCOPE, ["finding"], 1) is one
    assert kept.get(SCOPE, ["finding", "health"], 1) is None  # other kinds: read the file
    kept.keep(SCOPE, ["finding"], 1, one)
    assert kept.get(SCOPE, ["finding"], 2) is None  # someone else wrote the file
    assert kept.get(SCOPE, ["finding"], 1) is None  # and it stays forgotten

    kept.keep(SCOPE, ["finding"], 1, StoredItems())  # an empty scope: nothing to keep
    assert kept.get(SCOPE, ["finding"], 1) is None
    big = items_of(*(stored(f"k{i}") for i in range(KEEP_AT_MOST + 1)))
    kept.keep(SCOPE, ["finding"], 1, big)
    assert kept.get(SCOPE, ["finding"], 1) is None

    kept.keep(SCOPE, ["finding"], 1, one)
    write = ItemWrite("finding", "a", "active", 1, 1, T0, T0)
    kept.committed(SCOPE, [write] * PENDING_AT_MOST)
    kept.committed(SCOPE, [write])  # more than a steady sweep writes: read the file next time
    assert kept.get(SCOPE, ["finding"], 1) is None
