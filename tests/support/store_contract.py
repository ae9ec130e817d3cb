"""The contract every state store keeps, as a test suite any backend runs (Alertmanager's
notify/test kit is the model). Written only against `bridge.store.base.Store`, so the memory
store, the SQLite store and any later backend are held to the same promises:

- one transaction per sweep and per chunk: a commit that fails changes nothing;
- the outbox: claims in commit order per sink, `after=`, acks scoped to their sink, attempts
  counted, dead letters filtered and limited, replays at the end with attempts reset; the
  events storm summaries carried kept beside the dead letters and apart from them;
- queue stats, the sweep log (the last 1,000 per scope), item listing, cursors, snapshots;
- a reopened store keeps its state, a closed one says so.

A backend runs it with a subclass in its own test module that provides the `stores` fixture:

    class TestSQLiteStoreContract(StoreContract):
        @pytest.fixture
        def stores(self, tmp_path: Path) -> StoreFactory:
            return lambda: SQLiteStore(tmp_path / "bridge.db")

The fixture may use any other fixture (a server, a schema of its own per test dropped
afterwards) and overrides `backend_state` when it can read its raw state behind the interface's
back, so that "a failed commit changes nothing" also looks there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from bridge.diff import Differ, DiffPolicy, ItemWrite, StoredItems, diff
from bridge.model import Event, EventType, Sweep
from bridge.store.base import (
    Muted,
    Outcome,
    SilenceRecord,
    SinkRef,
    Store,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    SweepCommit,
    SweepRecord,
    UndecodableDeliveries,
)
from bridge.store.display import item_rows
from tests.core._helpers import SCOPE, T0, item, make_event, sweep

# Each call: an instance over this test's own state, not opened yet. Every call of one test
# reaches the same state (that is how reopening is tested); no two tests share one.
StoreFactory = Callable[[], Store]

KINDS = ("finding", "score")
SINKS = ("siem", "jira")
EVERYTHING = 100_000  # a limit no test reaches: "list it all"


def record(outcome: Outcome = "complete", **kw: Any) -> SweepRecord:
    kw.setdefault("started_at", T0)
    kw.setdefault("finished_at", T0 + timedelta(seconds=3))
    return SweepRecord(scope=kw.pop("scope", SCOPE), source="so", outcome=outcome, **kw)


def commit_events(*pairs: tuple[Event, Sequence[str]], **kw: Any) -> SweepCommit:
    return SweepCommit(record=record(events=len(pairs)), deliveries=list(pairs), **kw)


async def run_sweep(store: Store, s: Sweep, sinks: Sequence[str] = ("siem",),
                    now: datetime = T0, cursor: dict[str, str] | None = None) -> list[Event]:
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


def silence_record(id_: str, *, created: datetime = T0,
                   ends: datetime = T0 + timedelta(days=7)) -> SilenceRecord:
    return SilenceRecord(id_, '{"source": {"op": "eq", "value": "so"}}', T0, ends, "ana",
                         "known issue, fix in sprint 12", "cli", created)


def bad_state_write() -> ItemWrite:
    """A miss count for item "a" in a state no store accepts."""
    return ItemWrite("finding", "a", "exploded", 9, 0, T0, T0)  # type: ignore[arg-type]


async def depths(store: Store) -> dict[str, tuple[int, int]]:
    """(pending, dead) per sink that has either."""
    return {s.sink: (s.depth, s.dead) for s in await store.queue_stats()}


class StoreContract:
    """What every store promises. Subclasses provide the `stores` fixture (a `StoreFactory`)."""

    async def backend_state(self, store: Store) -> object:
        """Everything the backend holds, read behind the interface's back where it can (the
        SQLite store: every row of every table). None where the interface is all there is."""
        return None

    async def everything(self, store: Store, scopes: Sequence[str] = (SCOPE, "other")) -> object:
        """All a caller can see of the state, for "nothing changed" comparisons."""
        return {
            "items": await store.list_items(limit=EVERYTHING),
            "loaded": [await store.load_items(scope, KINDS) for scope in scopes],
            "cursors": [await store.load_cursor(scope) for scope in scopes],
            "outbox": [await store.claim(sink, EVERYTHING) for sink in SINKS],
            "dead": await store.dead_letters(limit=EVERYTHING),
            "stats": await store.queue_stats(),
            "sweeps": await store.sweeps(limit=EVERYTHING),
            "counts": sorted(await store.item_counts()),
            "muted": await store.muted(limit=EVERYTHING),
            "silences": await store.silences(),
            "refs": [await store.sink_refs(sink, limit=EVERYTHING) for sink in SINKS],
            "backend": await self.backend_state(store),
        }

    @pytest.fixture
    async def store(self, stores: StoreFactory) -> AsyncIterator[Store]:
        s = stores()
        await s.open()
        try:
            yield s
        finally:
            await s.close()

    # -- lifecycle

    async def test_reopen_keeps_state_and_does_not_migrate_again(
            self, stores: StoreFactory) -> None:
        s = stores()
        await s.open()
        await run_sweep(s, sweep(item("a")), cursor={"scan": "s1"})
        await s.close()
        s = stores()
        await s.open()  # a second open of a current schema changes nothing
        try:
            assert set(await s.load_items(SCOPE, ["finding"])) == {("finding", "a")}
            assert await s.load_cursor(SCOPE) == {"scan": "s1"}
            assert len(await s.claim("siem", 10)) == 1
            assert len(await s.sweeps()) == 1
        finally:
            await s.close()

    async def test_a_closed_store_says_so(self, stores: StoreFactory) -> None:
        s = stores()
        await s.open()
        await s.close()
        with pytest.raises(StoreUnavailableError, match="not open"):
            await s.load_cursor(SCOPE)
        with pytest.raises(StoreUnavailableError, match="not open"):
            await s.commit_sweep(commit_events((make_event("a"), ["siem"])))

    # -- sweeps

    async def test_commit_sweep_writes_everything(self, store: Store) -> None:
        events = await run_sweep(store, sweep(item("a"), item("b")), sinks=("siem", "jira"),
                                 cursor={"last_scan": "scan-9"})
        assert [e.type for e in events] == [EventType.NEW, EventType.NEW]
        stored = await store.load_items(SCOPE, ["finding"])
        assert {k: (v.state, v.counter, v.misses) for k, v in stored.items()} == {
            ("finding", "a"): ("active", 1, 0), ("finding", "b"): ("active", 1, 0)}
        assert all(v.snapshot is None for v in stored.values())  # loaded only when asked
        snaps = await store.load_snapshots(SCOPE, [("finding", "a"), ("finding", "nope")])
        assert set(snaps) == {("finding", "a")}
        assert stored[("finding", "a")].as_item(snaps[("finding", "a")]).title == "finding a"
        assert await store.load_cursor(SCOPE) == {"last_scan": "scan-9"}
        assert await store.load_cursor("other") == {}
        assert await depths(store) == {"siem": (2, 0), "jira": (2, 0)}
        assert len(await store.sweeps()) == 1
        for sink in ("siem", "jira"):
            assert [d.event for d in await store.claim(sink, 10)] == events

    async def test_load_items_filters_scope_and_kind(self, store: Store) -> None:
        await run_sweep(store, sweep(item("f"), item("s", kind="score"),
                                     kinds={"finding": True, "score": True}))
        await run_sweep(store, sweep(item("o"), scope="other"))
        assert set(await store.load_items(SCOPE, ["finding"])) == {("finding", "f")}
        assert set(await store.load_items(SCOPE, ["finding", "score"])) == {
            ("finding", "f"), ("score", "s")}
        assert await store.load_items(SCOPE, []) == {}
        assert set(await store.load_items("other", ["finding"])) == {("finding", "o")}
        # Grouped by kind inside, so the diff needs no (kind, key) tuple per item.
        both = await store.load_items(SCOPE, ["finding", "score"])
        assert isinstance(both, StoredItems)
        assert {kind: set(keys) for kind, keys in both.by_kind.items()} == {
            "finding": {"f"}, "score": {"s"}}
        assert all(row.key == key for keys in both.by_kind.values() for key, row in keys.items())
        assert await store.load_snapshots("other", [("finding", "f")]) == {}

    async def test_a_large_scope_loads_whole_beside_another(self, store: Store) -> None:
        """12,000 items written in turns with another scope's (so their rows interleave in the
        file) load whole, each with its own state: a store may read them in parts, and no part
        may be lost or borrow another scope's rows."""
        for turn in range(3):
            await run_sweep(store, sweep(*(item(f"{turn}-{n}", title=f"t{n % 7}")
                                           for n in range(4_000))))
            await run_sweep(store, sweep(*(item(f"{turn}-{n}") for n in range(1_000)),
                                   scope="other"))
        loaded = await store.load_items(SCOPE, ["finding"])
        assert len(loaded) == 12_000
        assert set(loaded.by_kind["finding"]) == {f"{t}-{n}" for t in range(3)
                                                  for n in range(4_000)}
        row = loaded[("finding", "2-3999")]
        assert (row.state, row.counter, row.misses) == ("active", 1, 0)
        assert "t2" in row.tracked  # 3999 % 7
        assert len(await store.load_items("other", ["finding"])) == 3_000

    async def test_full_history_round_trips_through_the_store(self, store: Store) -> None:
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
        (listed,) = await store.list_items(SCOPE)
        assert listed.resolved_at is None  # cleared by the reopen
        assert listed.first_seen == T0
        assert listed.snapshot == snap and listed.tracked == row.tracked

    async def test_a_rewrite_keeps_first_seen_and_a_partial_write_needs_a_row(
            self, store: Store) -> None:
        """A full write of a known item keeps when it was first seen; a partial write (a miss
        count) of an item the store does not have writes nothing."""
        later = T0 + timedelta(hours=1)
        full = [ItemWrite("finding", "a", "active", 1, 0, T0, T0, '{"s":1}', '{"title":"x"}'),
                ItemWrite("finding", "b", "active", 1, 0, T0, T0)]  # partial: no such row
        await store.commit_chunk(SCOPE, full, [])
        again = ItemWrite("finding", "a", "active", 2, 0, later, later, '{"s":2}', '{"title":"y"}')
        await store.commit_chunk(SCOPE, [again], [])
        (row,) = await store.list_items()
        assert (row.key, row.first_seen, row.changed_at, row.counter) == ("a", T0, later, 2)
        assert (row.tracked, row.snapshot) == ('{"s":2}', '{"title":"y"}')

    async def test_events_routed_nowhere_are_not_stored(self, store: Store) -> None:
        await store.commit_sweep(commit_events((make_event("a"), []),
                                               (make_event("b"), ["siem"])))
        assert await depths(store) == {"siem": (1, 0)}
        assert [d.event.key for d in await store.claim("siem", 10)] == ["b"]

    # -- what was not delivered, and why

    async def test_muted_events_are_recorded_with_their_commit(self, store: Store) -> None:
        a, b = make_event("a", severity="high"), make_event("b", severity="low", title="B")
        c = make_event("c", scope="other", type_=EventType.CHANGED, counter=2)
        await store.commit_chunk(SCOPE, [], [(a, ["siem"])], [
            Muted.of(a, "jira", "baseline:summary"), Muted.of(b, "jira", "baseline:summary"),
            Muted.of(b, "siem", "baseline:suppress")])
        await store.commit_sweep(SweepCommit(record=record(scope="other"), muted=[
            Muted.of(c, "siem", "silence", "s-1")]))
        rows = await store.muted(limit=EVERYTHING)
        assert [(m.key, m.sink, m.reason) for m in rows] == [  # newest first
            ("c", "siem", "silence"), ("b", "siem", "baseline:suppress"),
            ("b", "jira", "baseline:summary"), ("a", "jira", "baseline:summary")]
        assert rows[0] == Muted(c.id, "changed", "so", "scanorbit", "other", "finding",
                                "c", "finding c", "high", T0, "siem", "silence", "s-1")
        assert rows[1].title == "B" and rows[1].occurred_at == T0
        assert [m.key for m in await store.muted(SCOPE, limit=EVERYTHING)] == ["b", "b", "a"]
        assert [m.key for m in await store.muted(silence_id="s-1")] == ["c"]
        assert [m.sink for m in await store.muted(reason="baseline:summary")] == ["jira", "jira"]
        assert len(await store.muted(limit=2)) == 2
        assert await store.muted_counts(SCOPE, "baseline:summary") == {
            "jira": {("finding", "high"): 1, ("finding", "low"): 1}}
        assert await store.muted_counts(SCOPE, "baseline:suppress") == {
            "siem": {("finding", "low"): 1}}
        assert await store.muted_counts("other", "baseline:summary") == {}
        assert await depths(store) == {"siem": (1, 0)}  # muted rows are not deliveries

    async def test_a_refused_commit_records_no_muted_event(self, store: Store) -> None:
        await run_sweep(store, sweep(item("a")))
        a = make_event("a")
        with pytest.raises(StoreError, match="state commit failed"):
            await store.commit_sweep(SweepCommit(record=record(), writes=[bad_state_write()],
                                                 muted=[Muted.of(a, "siem", "silence", "x")]))
        with pytest.raises(StoreError, match="state commit failed"):
            await store.commit_chunk(SCOPE, [], [], [
                Muted.of(a, "siem", "shrug")])  # type: ignore[arg-type]
        assert await store.muted(limit=EVERYTHING) == []

    # -- silences

    async def test_silences_are_kept_newest_first(self, stores: StoreFactory) -> None:
        s = stores()
        await s.open()
        older = silence_record("s-old", created=T0)
        newer = silence_record("s-new", created=T0 + timedelta(minutes=1))
        await s.add_silence(older)
        await s.add_silence(newer)
        with pytest.raises(StoreError, match="exists already") as err:
            await s.add_silence(silence_record("s-old"))
        assert not isinstance(err.value, StoreUnavailableError | StoreCorruptError)
        assert await s.silences() == [newer, older]
        await s.close()
        s = stores()
        await s.open()
        try:
            assert await s.silences() == [newer, older]  # they outlive the process
        finally:
            await s.close()

    async def test_expiring_a_silence_ends_it_once(self, store: Store) -> None:
        await store.add_silence(silence_record("s-1", ends=T0 + timedelta(days=7)))
        await store.add_silence(silence_record("s-2", ends=T0 + timedelta(minutes=5)))
        at = T0 + timedelta(hours=1)
        ended = await store.expire_silence("s-1", at)
        assert ended is not None and (ended.ends_at, ended.expired_at) == (at, at)
        assert await store.expire_silence("s-1", at + timedelta(hours=1)) == ended  # kept
        past = await store.expire_silence("s-2", at)  # had ended by itself before
        assert past is not None and past.ends_at == T0 + timedelta(minutes=5)
        assert past.expired_at is None
        assert await store.expire_silence("nope", at) is None
        assert {x.id: x.ends_at for x in await store.silences()} == {
            "s-1": at, "s-2": T0 + timedelta(minutes=5)}

    async def test_settling_a_silence_writes_its_deliveries_once(self, store: Store) -> None:
        await store.add_silence(silence_record("s-1"))
        await store.add_silence(silence_record("s-2"))
        a, b = make_event("a"), make_event("b")
        at = T0 + timedelta(days=8)
        assert await store.settle_silence("s-1", at, [(a, ["siem", "jira"])],
                                          [Muted.of(b, "siem", "silence", "s-2")])
        assert [d.event for d in await store.claim("siem", 10)] == [a]
        assert [d.event for d in await store.claim("jira", 10)] == [a]
        assert [(m.key, m.silence_id) for m in await store.muted()] == [("b", "s-2")]
        assert [(x.id, x.settled_at) for x in await store.silences(unsettled=True)] == [
            ("s-2", None)]
        assert [x.settled_at for x in await store.silences() if x.id == "s-1"] == [at]
        before = await self.everything(store)
        assert not await store.settle_silence("s-1", at, [(b, ["siem"])])  # once only
        assert not await store.settle_silence("nope", at, [(b, ["siem"])])
        assert await self.everything(store) == before

    # -- a sink's own references

    async def test_sink_refs_are_kept_per_sink_and_outlive_the_process(
            self, stores: StoreFactory) -> None:
        s = stores()
        await s.open()
        intent = SinkRef("jira", "item-b", "intent", '{"label": "bridge-b"}', T0)
        await s.put_sink_refs([intent, SinkRef("jira", "item-a", "open", '{"key": "SEC-1"}', T0),
                               SinkRef("siem", "item-a", "x", "{}", T0)])
        ticket = SinkRef("jira", "item-b", "open", '{"key": "SEC-2"}', T0 + timedelta(seconds=5))
        await s.put_sink_refs([ticket])  # replaces the intent
        await s.close()
        s = stores()
        await s.open()
        try:
            found = await s.sink_refs("jira")
            assert [(r.key, r.state, r.value) for r in found] == [
                ("item-a", "open", '{"key": "SEC-1"}'), ("item-b", "open", '{"key": "SEC-2"}')]
            assert found[1] == ticket  # the time round-trips too
            assert [r.key for r in await s.sink_refs("jira", ["item-b", "nope"])] == ["item-b"]
            assert await s.sink_refs("jira", state="intent") == []
            assert [r.key for r in await s.sink_refs("jira", limit=1)] == ["item-a"]
            await s.delete_sink_refs("jira", ["item-a", "nope"])
            assert [r.key for r in await s.sink_refs("jira")] == ["item-b"]
            assert [r.sink for r in await s.sink_refs("siem")] == ["siem"]  # another sink's
        finally:
            await s.close()

    async def test_a_sink_ref_and_its_silence_land_together_or_not_at_all(
            self, store: Store) -> None:
        accepted = SinkRef("jira", "item-a", "accepted", '{"key": "SEC-1"}', T0)
        await store.put_sink_refs([accepted], silence=silence_record("s-1"))
        assert await store.sink_refs("jira") == [accepted]
        assert [x.id for x in await store.silences()] == ["s-1"]
        before = await self.everything(store)
        with pytest.raises(StoreError, match="exists already"):
            await store.put_sink_refs([SinkRef("jira", "item-b", "accepted", "{}", T0)],
                                      silence=silence_record("s-1"))
        assert await self.everything(store) == before

    @pytest.mark.parametrize("breakage", ["item_state", "cursor_value", "unencodable_event"])
    async def test_failed_commit_changes_nothing(self, store: Store, breakage: str) -> None:
        await run_sweep(store, sweep(item("a"), item("b")), cursor={"scan": "1"})
        before = await self.everything(store)
        good = list(diff(await store.load_items(SCOPE, ["finding"]),
                         sweep(item("a", severity="critical"), item("c")), DiffPolicy(),
                         source="so", vendor="scanorbit", now=T0).writes)
        events = [make_event("c"), make_event("a", type_=EventType.CHANGED, counter=2)]
        if breakage == "item_state":
            # The good writes come first: a store must undo them, not just stop.
            commit = SweepCommit(record=record(), writes=[*good, bad_state_write()],
                                 deliveries=[(e, ["siem", "jira"]) for e in events],
                                 cursor={"scan": "2"})
        elif breakage == "cursor_value":
            # Items, events and outbox rows come before the cursor.
            commit = SweepCommit(record=record(), writes=good,
                                 deliveries=[(e, ["siem", "jira"]) for e in events],
                                 cursor={"scan": "2", "broken": None})  # type: ignore[dict-item]
        else:
            # An integer beyond 64 bits: JSON as the stores write it cannot hold it.
            huge = make_event("d", raw={"count": 2**70})
            commit = SweepCommit(record=record(), writes=good,
                                 deliveries=[(e, ["siem", "jira"]) for e in [*events, huge]],
                                 cursor={"scan": "2"})
        with pytest.raises(StoreError) as err:
            await store.commit_sweep(commit)
        assert "state commit failed" in str(err.value) and SCOPE in str(err.value)
        # Refused for what it holds: the store is fine, neither unavailable nor corrupt.
        assert not isinstance(err.value, StoreUnavailableError | StoreCorruptError)
        assert await self.everything(store) == before
        # The store is still usable: the same sweep, minus the breakage, commits.
        ok = SweepCommit(record=record(), writes=good,
                         deliveries=[(e, ["siem"]) for e in events], cursor={"scan": "2"})
        await store.commit_sweep(ok)
        assert len(await store.sweeps()) == 2 and len(await store.list_items()) == 3
        assert await store.load_cursor(SCOPE) == {"scan": "2"}

    async def test_commit_chunk_writes_items_with_their_outbox_rows_only(
            self, store: Store) -> None:
        r = diff({}, sweep(item("a"), item("b")), DiffPolicy(), source="so", vendor="scanorbit",
                 now=T0)
        await store.commit_chunk(SCOPE, r.writes, [(e, ["siem"]) for e in r.events])
        assert len(await store.list_items()) == 2
        assert await depths(store) == {"siem": (2, 0)}
        assert await store.sweeps() == [] and await store.load_cursor(SCOPE) == {}
        assert [d.event for d in await store.claim("siem", 10)] == r.events

    async def test_failed_chunk_changes_nothing(self, store: Store) -> None:
        await run_sweep(store, sweep(item("a")))
        before = await self.everything(store)
        r = diff({}, sweep(item("b"), item("c")), DiffPolicy(), source="so", vendor="scanorbit",
                 now=T0)
        with pytest.raises(StoreError, match="state commit failed"):
            await store.commit_chunk(SCOPE, [*r.writes, bad_state_write()],
                                     [(e, ["siem"]) for e in r.events])
        assert await self.everything(store) == before

    async def test_sweep_log_keeps_the_last_1000_per_scope(self, store: Store) -> None:
        # Two scopes sweeping alternately: 1,200 records in all, 600 each; none may be pruned.
        for _ in range(600):
            for scope in ("busy", "quiet"):
                await store.commit_sweep(SweepCommit(record=record(scope=scope)))
        assert len(await store.sweeps("quiet", limit=5000)) == 600
        assert len(await store.sweeps("busy", limit=5000)) == 600
        busy_ids = [r.id for r in reversed(await store.sweeps("busy", limit=5000))]
        for _ in range(450):
            busy_ids.append(await store.commit_sweep(SweepCommit(record=record(scope="busy"))))
        busy = await store.sweeps("busy", limit=5000)
        assert [r.id for r in busy] == busy_ids[:-1001:-1]  # the newest 1,000, newest first
        assert len(await store.sweeps("quiet", limit=5000)) == 600

    async def test_sweeps_inspection(self, store: Store) -> None:
        first_id = await store.commit_sweep(SweepCommit(record=record(
            items_seen=5, events=2, requests=3, notes=("page 2 drifted",))))
        await store.commit_sweep(SweepCommit(record=record("failed", error="401 unauthorized")))
        await store.commit_sweep(SweepCommit(record=record("skipped", scope="other")))
        rows = await store.sweeps()
        assert [r.outcome for r in rows] == ["skipped", "failed", "complete"]  # newest first
        first = rows[-1]
        assert (first.items_seen, first.events, first.requests, first.notes, first.error) == (
            5, 2, 3, ("page 2 drifted",), None)
        assert first.started_at == T0 and first.finished_at == T0 + timedelta(seconds=3)
        assert first.id == first_id
        assert rows[1].error == "401 unauthorized"
        assert [r.outcome for r in await store.sweeps(scope=SCOPE)] == ["failed", "complete"]
        assert len(await store.sweeps(limit=1)) == 1
        assert rows[0].id is not None and rows[1].id is not None and rows[0].id > rows[1].id

    async def test_a_miss_is_not_a_change(self, store: Store) -> None:
        """Counting a miss keeps `changed_at`; the resolution that follows moves it."""
        await run_sweep(store, sweep(item("a")), now=T0)
        await run_sweep(store, sweep(), now=T0 + timedelta(minutes=5))
        (row,) = await store.list_items(SCOPE)
        assert (row.misses, row.changed_at) == (1, T0)
        later = T0 + timedelta(minutes=10)
        await run_sweep(store, sweep(), now=later)
        (row,) = await store.list_items(SCOPE)
        assert (row.state, row.changed_at, row.resolved_at) == ("resolved", later, later)

    async def test_items_inspection(self, store: Store) -> None:
        await run_sweep(store, sweep(item("a", title="A"), item("b", severity="low")), now=T0)
        await run_sweep(store, sweep(item("a", title="A"),
                                     item("b", severity="low", active=False)),
                        now=T0 + timedelta(minutes=1))
        await run_sweep(store, sweep(item("z"), scope="other"), now=T0 + timedelta(minutes=2))
        rows = item_rows(await store.list_items())
        assert [(r["scope"], r["key"]) for r in rows] == [("other", "z"), (SCOPE, "b"),
                                                           (SCOPE, "a")]  # newest change first
        assert [r.key for r in await store.list_items(scope=SCOPE)] == ["b", "a"]
        (b,) = item_rows(await store.list_items(state="resolved"))
        assert (b["key"], b["state"], b["counter"], b["severity"]) == ("b", "resolved", 2, "low")
        assert b["resolved_at"] == (T0 + timedelta(minutes=1)).isoformat()
        (a,) = item_rows(await store.list_items(scope=SCOPE, state="active"))
        assert (a["title"], a["severity"], a["misses"]) == ("A", "high", 0)
        assert a["first_seen"] == a["changed_at"] == T0.isoformat() and a["resolved_at"] is None
        assert len(await store.list_items(limit=1)) == 1
        assert sorted(await store.item_counts()) == [("other", "finding", "active", 1),
                                                     (SCOPE, "finding", "active", 1),
                                                     (SCOPE, "finding", "resolved", 1)]

    async def test_items_filters(self, store: Store) -> None:
        """What `bridge state items --source --kind --since --severity` asks for."""
        later = T0 + timedelta(hours=2)
        await run_sweep(store, sweep(item("a", severity="low"), item("b", severity="critical"),
                                     item("s", kind="score", severity="medium"),
                                     kinds={"finding": True, "score": True}), now=T0)
        await run_sweep(store, sweep(item("a", severity="high"), item("b", severity="critical"),
                                     item("s", kind="score", severity="medium"),
                                     kinds={"finding": True, "score": True}), now=later)
        await run_sweep(store, sweep(item("o", severity="high"), scope="other"), now=T0)

        async def keys(**filters: Any) -> list[tuple[str, str]]:
            return [(r.scope, r.key) for r in await store.list_items(limit=EVERYTHING, **filters)]

        assert await keys(scopes=[SCOPE]) == [(SCOPE, "a"), (SCOPE, "b"), (SCOPE, "s")]
        assert await keys(scopes=["other", "gone"]) == [("other", "o")]
        assert await keys(scopes=[]) == []
        assert await keys(kinds=["score"]) == [(SCOPE, "s")]
        assert await keys(since=later) == [(SCOPE, "a")]  # the one change at `later`
        assert await keys(since=later + timedelta(seconds=1)) == []
        # The severity it was last seen with: a's changed from low to high.
        assert await keys(severities=["high", "critical"]) == [(SCOPE, "a"), ("other", "o"),
                                                                (SCOPE, "b")]
        assert await keys(severities=["low"]) == []
        assert await keys(scope=SCOPE, kinds=["finding"], severities=["critical"],
                          since=T0) == [(SCOPE, "b")]
        assert await keys(scopes=["other"], state="resolved") == []

    async def test_sweeps_by_outcome_and_the_scopes_swept(self, store: Store) -> None:
        assert await store.swept_scopes() == {}
        ok = await store.commit_sweep(SweepCommit(record=record()))
        await store.commit_sweep(SweepCommit(record=record("incomplete", notes=("page 2",))))
        await store.commit_sweep(SweepCommit(record=record("failed", error="401")))
        await store.commit_sweep(SweepCommit(record=SweepRecord(
            scope="tenant-x", source="ae", started_at=T0, finished_at=T0, outcome="skipped")))
        assert [r.id for r in await store.sweeps(SCOPE, outcomes=["complete"])] == [ok]
        assert [r.outcome for r in await store.sweeps(outcomes=["failed", "skipped"])] == [
            "skipped", "failed"]
        assert await store.sweeps("tenant-x", outcomes=["complete"]) == []
        assert await store.swept_scopes() == {SCOPE: "so", "tenant-x": "ae"}

    async def test_items_changed_together_are_listed_in_key_order(self, store: Store) -> None:
        await run_sweep(store, sweep(item("m"), item("b"), item("x"), item("k", kind="score"),
                                     kinds={"finding": True, "score": True}))
        await run_sweep(store, sweep(item("c"), scope="other"))
        assert [(r.scope, r.kind, r.key) for r in await store.list_items()] == [
            ("other", "finding", "c"), (SCOPE, "finding", "b"), (SCOPE, "finding", "m"),
            (SCOPE, "finding", "x"), (SCOPE, "score", "k")]

    # -- the outbox

    async def test_claim_order_is_commit_order_per_sink(self, store: Store) -> None:
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

    async def test_claimed_event_equals_committed_event(self, store: Store) -> None:
        ev = make_event("k", type_=EventType.CHANGED, counter=2,
                        changes={"severity": ("low", "high")}, attributes={"region": "eu", "n": 3},
                        raw={"nested": {"a": [1, 2]}}, tenant="acme", reason="changed: severity")
        await store.commit_sweep(commit_events((ev, ["siem"])))
        (d,) = await store.claim("siem", 1)
        assert d.event == ev

    async def test_ack_removes_only_the_acknowledged_rows(self, store: Store) -> None:
        shared, solo, doomed = make_event("shared"), make_event("solo"), make_event("doomed")
        await store.commit_sweep(commit_events((shared, ["siem", "jira"]), (solo, ["siem"]),
                                               (doomed, ["siem", "jira"])))
        jira = {d.event.key: d.seq for d in await store.claim("jira", 10)}
        await store.bury("jira", [jira["doomed"]], "rejected: 400")
        siem = await store.claim("siem", 10)
        await store.ack("siem", [d.seq for d in siem])
        assert await store.claim("siem", 10) == []
        # Each sink's row carries its event whole: what jira still has to deliver (and its
        # dead letter) is intact, and nothing of what siem delivered is left behind.
        assert [d.event for d in await store.claim("jira", 10)] == [shared]
        assert [d.event for d in await store.dead_letters("jira")] == [doomed]
        assert await depths(store) == {"jira": (1, 1)}
        await store.ack("jira", [jira["shared"]])
        assert await depths(store) == {"jira": (0, 1)}

    async def test_claims_and_acks_beyond_a_parameter_list(self, store: Store) -> None:
        events = [make_event(f"k{i}") for i in range(1_200)]
        await store.commit_sweep(commit_events(*[(e, ["siem"]) for e in events]))
        claimed = await store.claim("siem", 1_200)
        assert [d.event.key for d in claimed] == [e.key for e in events]
        await store.ack("siem", [d.seq for d in claimed[:1_100]])
        assert [d.event.key for d in await store.claim("siem", 1_200)] == [
            f"k{i}" for i in range(1_100, 1_200)]

    async def test_claim_after_a_seq_skips_what_is_in_flight(self, store: Store) -> None:
        events = [make_event(f"k{i}") for i in range(5)]
        await store.commit_sweep(commit_events(*[(e, ["siem"]) for e in events]))
        first = await store.claim("siem", 2)
        assert [d.event.key for d in await store.claim("siem", 2, after=first[-1].seq)] == [
            "k2", "k3"]
        assert await store.claim("siem", 2, after=10**9) == []

    async def test_a_claimed_delivery_carries_its_event_as_stored(self, store: Store) -> None:
        """The body is the event's JSON as committed (what a JSON sink sends as it is), and
        decodes, on first use, into the event."""
        ev = make_event("x", attributes={"region": "eu", "n": 3}, raw={"deep": [{"a": None}]})
        await store.commit_sweep(commit_events((ev, ["siem"])))
        for decode in (True, False):  # decoded by the claim, or only checked there
            (d,) = await store.claim("siem", 10, decode=decode)
            assert (d.sink, d.event_id, d.body, d.attempts) == ("siem", ev.id, ev.to_json(), 0)
            assert d.event == ev and d.event.to_json() == d.body

    async def test_ack_is_scoped_to_its_sink(self, store: Store) -> None:
        ev = make_event("x")
        await store.commit_sweep(commit_events((ev, ["siem", "jira"])))
        (siem,) = await store.claim("siem", 1)
        await store.ack("jira", [siem.seq])  # wrong sink: must not delete siem's row
        assert len(await store.claim("siem", 10)) == 1
        assert len(await store.claim("jira", 10)) == 1

    async def test_record_failure_counts_attempts(self, store: Store) -> None:
        a, b = make_event("a"), make_event("b")
        await store.commit_sweep(commit_events((a, ["siem"]), (b, ["siem"])))
        da, _db = await store.claim("siem", 10)
        await store.record_failure("siem", [da.seq], "receiver answered 503")
        await store.record_failure("siem", [da.seq], "receiver answered 502: " + "x" * 5000)
        await store.record_failure("jira", [da.seq], "another sink's failure")  # not siem's
        attempts = {d.event.key: d.attempts for d in await store.claim("siem", 10)}
        assert attempts == {"a": 2, "b": 0}

    async def test_an_event_that_does_not_decode_is_named_then_listed_as_a_dead_letter(
            self, store: Store) -> None:
        """An event the stores can write but not read back (a list where a scalar belongs,
        as an incompatible version could write): its claim names it, the rest goes on."""
        a, b, c = make_event("a"), make_event("b", attributes={"ports": [22, 80]}), make_event("c")
        await store.commit_sweep(commit_events((a, ["siem"]), (b, ["siem"]), (c, ["siem"])))
        with pytest.raises(UndecodableDeliveries) as unchecked:
            await store.claim("siem", 3, decode=False)  # a check finds it as decoding does
        with pytest.raises(UndecodableDeliveries) as caught:
            await store.claim("siem", 3)
        assert caught.value.rows == unchecked.value.rows
        ((seq_b, b_id),) = caught.value.rows
        assert b_id == b.id and "outbox row(s) of siem" in str(caught.value)
        assert [d.event for d in await store.claim("siem", 1)] == [a]  # before the bad row: fine
        await store.bury("siem", [seq_b], f"undecodable event: {caught.value.error}")
        assert [d.event for d in await store.claim("siem", 3)] == [a, c]
        (dead,) = await store.dead_letters()
        assert (dead.seq, dead.event_id, dead.event) == (seq_b, b.id, None)

    async def test_bury_moves_to_dead_letters(self, store: Store) -> None:
        a, b = make_event("a"), make_event("b")
        await store.commit_sweep(commit_events((a, ["siem"]), (b, ["siem"])))
        da, _ = await store.claim("siem", 10)
        await store.record_failure("siem", [da.seq], "503")
        await store.bury("siem", [da.seq], "gave up after 2 attempts: 503")
        assert [d.event.key for d in await store.claim("siem", 10)] == ["b"]
        (dead,) = await store.dead_letters()
        assert (dead.seq, dead.sink, dead.event_id, dead.event, dead.attempts) == (
            da.seq, "siem", a.id, a, 2)
        assert dead.error == "gave up after 2 attempts: 503"
        assert dead.failed_at.tzinfo is not None
        assert await store.dead_letters("jira") == []
        assert len(await store.dead_letters("siem")) == 1

    async def test_a_long_error_is_kept_cut_to_2000_characters(self, store: Store) -> None:
        await store.commit_sweep(commit_events((make_event("a"), ["siem"])))
        (d,) = await store.claim("siem", 1)
        await store.bury("siem", [d.seq], "receiver answered 400: " + "x" * 5000)
        (dead,) = await store.dead_letters()
        assert dead.error.startswith("receiver answered 400: x") and len(dead.error) == 2000

    async def test_bury_is_scoped_to_its_sink(self, store: Store) -> None:
        await store.commit_sweep(commit_events((make_event("a"), ["siem", "jira"])))
        (siem,) = await store.claim("siem", 1)
        await store.bury("jira", [siem.seq], "another sink's rejection")
        assert await depths(store) == {"siem": (1, 0), "jira": (1, 0)}

    async def test_dead_letters_filter_and_limit(self, store: Store) -> None:
        evs = [make_event(f"k{i}") for i in range(5)]
        await store.commit_sweep(commit_events(*[(e, ["siem", "jira"]) for e in evs]))
        for sink in ("siem", "jira"):
            await store.bury(sink, [d.seq for d in await store.claim(sink, 10)], "400")
        assert len(await store.dead_letters()) == 10
        assert len(await store.dead_letters(limit=3)) == 3
        assert [d.event_id for d in await store.dead_letters("jira")] == [e.id for e in evs]
        seqs = [d.seq for d in await store.dead_letters()]
        assert seqs == sorted(seqs)

    async def test_replay_puts_dead_letters_at_the_end_with_attempts_reset(
            self, store: Store) -> None:
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

    async def test_replay_selected_seqs(self, store: Store) -> None:
        evs = [make_event(f"k{i}") for i in range(3)]
        await store.commit_sweep(commit_events(*[(e, ["siem"]) for e in evs]))
        seqs = [d.seq for d in await store.claim("siem", 10)]
        await store.bury("siem", seqs, "400")
        assert await store.replay(seqs=[seqs[2], seqs[0]]) == 2
        assert [d.event.key for d in await store.claim("siem", 10)] == ["k0", "k2"]
        assert [d.event_id for d in await store.dead_letters()] == [evs[1].id]
        assert await store.replay(seqs=[123456]) == 0
        assert await store.replay("jira", seqs=[seqs[1]]) == 0  # siem's, not jira's

    async def test_replayed_then_acked_leaves_nothing(self, store: Store) -> None:
        ev = make_event("a")
        await store.commit_sweep(commit_events((ev, ["siem"])))
        await store.bury("siem", [(await store.claim("siem", 1))[0].seq], "400")
        await store.replay()
        (replayed,) = await store.claim("siem", 1)
        assert replayed.event == ev
        await store.ack("siem", [replayed.seq])
        assert await store.queue_stats() == [] and await store.dead_letters() == []

    async def test_summarised_events_are_kept_apart_from_the_dead_letters(
            self, store: Store) -> None:
        """What a storm summary carried (bridge/grouping.py) is listed beside the dead letters
        with the summary's id, counted apart from them, and left alone by a plain replay (it
        would be the flood the summary prevented) but replayable when asked for."""
        evs = [make_event(f"k{i}") for i in range(5)]
        await store.commit_sweep(commit_events(*[(e, ["siem"]) for e in evs]))
        seqs = [d.seq for d in await store.claim("siem", 10)]
        await store.bury("siem", seqs[:1], "rejected: 400")
        await store.bury("siem", seqs[1:4], "summarised: storm guard", summary="sm-1")
        listed = await store.dead_letters()
        assert [(d.seq, d.summary) for d in listed] == [
            (seqs[0], None), (seqs[1], "sm-1"), (seqs[2], "sm-1"), (seqs[3], "sm-1")]
        assert listed[1].event == evs[1] and listed[1].error == "summarised: storm guard"
        assert [d.seq for d in await store.dead_letters(summarised=True)] == seqs[1:4]
        assert [d.seq for d in await store.dead_letters("siem", summarised=False)] == seqs[:1]
        assert await store.dead_letters("jira", summarised=True) == []
        assert len(await store.dead_letters(limit=2, summarised=True)) == 2
        (stats,) = await store.queue_stats()
        assert (stats.depth, stats.dead, stats.summarised) == (1, 1, 3)
        assert await store.replay("siem") == 1  # the dead letter only
        assert [d.summary for d in await store.dead_letters()] == ["sm-1"] * 3
        assert await store.replay(seqs=[seqs[2]], summarised=True) == 1
        assert await store.replay(summarised=None) == 2
        assert [d.event.key for d in await store.claim("siem", 10)] == ["k4", "k0", "k2", "k1",
                                                                         "k3"]
        assert await store.dead_letters() == []
        assert [(s.dead, s.summarised) for s in await store.queue_stats()] == [(0, 0)]

    async def test_queue_stats(self, store: Store) -> None:
        assert await store.queue_stats() == []
        evs = [make_event(f"k{i}") for i in range(4)]
        await store.commit_sweep(commit_events(*[(e, ["siem"]) for e in evs],
                                               (evs[0], ["jira"])))
        await store.bury("siem", [(await store.claim("siem", 1))[0].seq], "400")
        stats = {s.sink: s for s in await store.queue_stats()}
        assert (stats["siem"].depth, stats["siem"].dead) == (3, 1)
        assert (stats["jira"].depth, stats["jira"].dead) == (1, 0)
        assert stats["siem"].oldest_created_at is not None
        assert stats["siem"].oldest_created_at.tzinfo is not None
        await store.ack("jira", [(await store.claim("jira", 1))[0].seq])
        await store.ack("siem", [d.seq for d in await store.claim("siem", 10)])
        stats = {s.sink: s for s in await store.queue_stats()}
        assert set(stats) == {"siem"}  # jira has nothing pending and nothing dead
        assert (stats["siem"].depth, stats["siem"].oldest_created_at, stats["siem"].dead) == (
            0, None, 1)
