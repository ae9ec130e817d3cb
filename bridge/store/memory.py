"""A store in process memory, with the SQLite store's semantics (tests/support/store_contract.py
holds both to the same promises): for tests, demos and dry runs that want no file. The state
lives as long as the object: closing it refuses further use until it is opened again, and
nothing survives the process.

Every method runs to completion without awaiting, so on the event loop each one is a
transaction: nothing reads or writes in between. A commit checks and encodes all it holds
before it changes anything, so a commit that is refused changes nothing, like one rolled back.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import deque
from collections.abc import Collection, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

from bridge.diff import ItemWrite, StoredItem, StoredItems
from bridge.model import Event
from bridge.store.base import (
    MUTE_REASONS,
    MUTED_KEPT,
    STATES,
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
    StoreError,
    StoreUnavailableError,
    SweepCommit,
    SweepRecord,
    claimed,
    commit_refused,
    event_or_none,
    in_commit_order,
    snapshot_severity,
)

SWEEPS_KEPT = 1000  # per scope, as every store keeps them
T = TypeVar("T")


def _limited(rows: list[T], limit: int) -> list[T]:
    """SQL's LIMIT: a negative one is no limit."""
    return rows if limit < 0 else rows[:limit]


def apply_item_writes(rows: MutableMapping[tuple[str, str], ItemRecord], scope: str,
                      writes: Sequence[ItemWrite]) -> None:
    """What a commit does to one scope's items, keyed by (kind, key): every store's rules.

    Full writes (a snapshot) create or replace a row but keep its `first_seen`; then partial
    writes (a miss counted, an absence resolved) change state, misses and counter of a row
    that exists (nothing otherwise), keep its snapshot and tracked fields, move `changed_at`
    only when the state changes and `resolved_at` only to a new value."""
    for w in in_commit_order(writes):
        old = rows.get((w.kind, w.key))
        if w.snapshot is not None:
            assert w.tracked is not None  # `refusal` turned such a write away
            rows[(w.kind, w.key)] = ItemRecord(
                scope, w.kind, w.key, w.state, w.tracked, w.counter, w.misses,
                old.first_seen if old is not None else w.first_seen, w.changed_at,
                w.resolved_at, w.snapshot)
        elif old is not None:
            rows[(w.kind, w.key)] = dataclasses.replace(
                old, state=w.state, misses=w.misses, counter=w.counter,
                changed_at=old.changed_at if old.state == w.state else w.changed_at,
                resolved_at=w.resolved_at if w.resolved_at is not None else old.resolved_at)


def refusal(writes: Iterable[ItemWrite], cursor: dict[str, str],
            muted: Iterable[Muted] = ()) -> str | None:
    """Why a store's schema would refuse these writes, cursor values or muted rows, or None."""
    for m in muted:
        if m.reason not in MUTE_REASONS:
            return f"muted event {m.event_id}: reason {m.reason!r} is not one of " \
                   f"{', '.join(MUTE_REASONS)}"
    for w in writes:
        if w.state not in STATES:
            return f"item {w.kind}/{w.key}: state {w.state!r} is not one of {', '.join(STATES)}"
        if w.snapshot is not None and w.tracked is None:
            return f"item {w.kind}/{w.key}: a snapshot without its tracked fields"
    for name, value in cursor.items():
        if not isinstance(value, str):
            return f"cursor {name!r}: {value!r} is not a string"
    return None


@dataclass(slots=True)
class _Pending:
    seq: int
    sink: str
    event_id: str
    body: str
    created_at: float
    attempts: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class _Dead:
    seq: int
    sink: str
    event_id: str
    body: str
    attempts: int
    error: str
    failed_at: float
    summary: str | None = None


class MemoryStateConfig(StateConfig):
    """`state: {backend: memory}`: nothing survives the process. Every start is a first
    sweep and a crash loses what was queued, so it suits one-off exports (`bridge once`) and
    tests, never a daemon that must lose nothing."""

    backend: Literal["memory"]

    def build(self) -> MemoryStore:
        return MemoryStore()

    def describe(self) -> str:
        return "memory (nothing is kept across restarts)"


class MemoryStore(Store):
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._open = False
        self._items: dict[str, dict[tuple[str, str], ItemRecord]] = {}
        self._cursors: dict[str, dict[str, str]] = {}
        self._sweeps: dict[str, deque[SweepRecord]] = {}
        self._sweep_ids = itertools.count(1)
        # Per sink, in seq order: seqs only grow (a replay takes new ones), and a dict keeps
        # insertion order, so iterating a sink's rows is claiming them in commit order.
        self._outbox: dict[str, dict[int, _Pending]] = {}
        self._dead: dict[int, _Dead] = {}
        self._seqs = itertools.count(1)  # shared by every sink, never reused
        self._muted: list[tuple[float, Muted]] = []  # (recorded at, row), oldest first
        self._silences: dict[str, SilenceRecord] = {}
        self._refs: dict[tuple[str, str], SinkRef] = {}

    def _usable(self) -> None:
        if not self._open:
            raise StoreUnavailableError(f"state store {self.name} is not open")

    # -- lifecycle

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    # -- sweeps and item state

    async def load_items(self, scope: str, kinds: Collection[str]) -> StoredItems:
        self._usable()
        wanted = set(kinds)
        by_kind: dict[str, dict[str, StoredItem]] = {}
        for (kind, key), r in self._items.get(scope, {}).items():
            if kind in wanted:
                by_kind.setdefault(kind, {})[key] = r.stored()
        return StoredItems(by_kind)

    async def load_snapshots(self, scope: str, idents: Collection[tuple[str, str]]
                             ) -> dict[tuple[str, str], str]:
        self._usable()
        rows = self._items.get(scope, {})
        return {k: rows[k].snapshot for k in idents if k in rows}

    async def load_cursor(self, scope: str) -> dict[str, str]:
        self._usable()
        return dict(self._cursors.get(scope, {}))

    async def commit_chunk(self, scope: str, writes: Sequence[ItemWrite],
                           deliveries: Sequence[tuple[Event, Sequence[str]]],
                           muted: Sequence[Muted] = ()) -> None:
        self._usable()
        outbox = self._checked(scope, writes, deliveries, {}, muted)
        apply_item_writes(self._items.setdefault(scope, {}), scope, writes)
        now = time.time()
        self._enqueue(outbox, now)
        self._muted.extend((now, m) for m in muted)

    async def commit_sweep(self, commit: SweepCommit) -> int:
        self._usable()
        r = commit.record
        outbox = self._checked(r.scope, commit.writes, commit.deliveries, commit.cursor,
                               commit.muted)
        apply_item_writes(self._items.setdefault(r.scope, {}), r.scope, commit.writes)
        self._cursors.setdefault(r.scope, {}).update(commit.cursor)
        now = time.time()
        self._enqueue(outbox, now)
        self._muted.extend((now, m) for m in commit.muted)
        self._prune_muted(r.scope, now)
        record = dataclasses.replace(r, notes=tuple(r.notes), id=next(self._sweep_ids))
        self._sweeps.setdefault(r.scope, deque(maxlen=SWEEPS_KEPT)).append(record)
        assert record.id is not None
        return record.id

    @staticmethod
    def _checked(scope: str, writes: Sequence[ItemWrite],
                 deliveries: Sequence[tuple[Event, Sequence[str]]],
                 cursor: dict[str, str], muted: Sequence[Muted] = ()
                 ) -> list[tuple[str, str, str]]:
        """The commit's outbox rows (sink, event id, body), once nothing in it is refused."""
        reason = refusal(writes, cursor, muted)
        if reason is not None:
            raise commit_refused(scope, reason)
        try:
            return [(sink, e.id, body) for e, sinks in deliveries if sinks
                    for body in (e.to_json(),) for sink in sinks]
        except TypeError as exc:  # orjson's JSONEncodeError: a value JSON cannot hold
            raise commit_refused(scope, f"an event cannot be encoded: {exc}") from exc

    def _prune_muted(self, scope: str, now: float) -> None:
        cutoff = now - MUTED_KEPT.total_seconds()
        pending = {s.id for s in self._silences.values() if s.settled_at is None}
        self._muted = [(at, m) for at, m in self._muted
                       if m.scope != scope or at >= cutoff or m.silence_id in pending]

    # -- silences

    async def add_silence(self, silence: SilenceRecord) -> None:
        self._usable()
        if silence.id in self._silences:
            raise StoreError(f"a silence with id {silence.id} exists already")
        self._silences[silence.id] = silence

    async def silences(self, *, unsettled: bool = False) -> list[SilenceRecord]:
        self._usable()
        found = sorted((s for s in self._silences.values()
                        if not unsettled or s.settled_at is None), key=lambda s: s.id)
        found.sort(key=lambda s: s.created_at, reverse=True)  # stable: ties stay in id order
        return found

    async def expire_silence(self, silence_id: str, at: datetime) -> SilenceRecord | None:
        self._usable()
        silence = self._silences.get(silence_id)
        if silence is not None and silence.ends_at > at:
            silence = self._silences[silence_id] = dataclasses.replace(
                silence, ends_at=at, expired_at=at)
        return silence

    async def settle_silence(self, silence_id: str, at: datetime,
                             deliveries: Sequence[tuple[Event, Sequence[str]]],
                             muted: Sequence[Muted] = ()) -> bool:
        self._usable()
        silence = self._silences.get(silence_id)
        if silence is None or silence.settled_at is not None:
            return False
        outbox = self._checked(f"silence {silence_id}", [], deliveries, {}, muted)
        self._silences[silence_id] = dataclasses.replace(silence, settled_at=at)
        now = time.time()
        self._enqueue(outbox, now)
        self._muted.extend((now, m) for m in muted)
        return True

    # -- a sink's own references

    async def sink_refs(self, sink: str, keys: Collection[str] | None = None, *,
                        state: str | None = None, limit: int = 100) -> list[SinkRef]:
        self._usable()
        wanted = None if keys is None else set(keys)
        found = sorted((r for (s, k), r in self._refs.items() if s == sink
                        and (wanted is None or k in wanted)
                        and (state is None or r.state == state)), key=lambda r: r.key)
        return _limited(found, limit)

    async def put_sink_refs(self, refs: Sequence[SinkRef], *,
                            silence: SilenceRecord | None = None) -> None:
        self._usable()
        if silence is not None:
            await self.add_silence(silence)  # refused first: then nothing is written
        for r in refs:
            self._refs[(r.sink, r.key)] = r

    async def delete_sink_refs(self, sink: str, keys: Collection[str]) -> None:
        self._usable()
        for key in keys:
            self._refs.pop((sink, key), None)

    # -- what was not delivered, and why

    async def muted(self, scope: str | None = None, *, silence_id: str | None = None,
                    reason: MuteReason | None = None, limit: int = 100) -> list[Muted]:
        self._usable()
        found = [m for _, m in reversed(self._muted)
                 if (scope is None or m.scope == scope)
                 and (silence_id is None or m.silence_id == silence_id)
                 and (reason is None or m.reason == reason)]
        return _limited(found, limit)

    async def muted_counts(self, scope: str, reason: MuteReason
                           ) -> dict[str, dict[tuple[str, str], int]]:
        self._usable()
        out: dict[str, dict[tuple[str, str], int]] = {}
        for _, m in self._muted:
            if m.scope == scope and m.reason == reason:
                counts = out.setdefault(m.sink, {})
                counts[(m.kind, m.severity)] = counts.get((m.kind, m.severity), 0) + 1
        return out

    def _enqueue(self, rows: Iterable[tuple[str, str, str]], now: float) -> None:
        for sink, event_id, body in rows:
            seq = next(self._seqs)
            self._outbox.setdefault(sink, {})[seq] = _Pending(seq, sink, event_id, body, now)

    # -- outbox

    async def claim(self, sink: str, limit: int, after: int = 0, *,
                    decode: bool = True) -> list[Delivery]:
        self._usable()
        pending = self._outbox.get(sink, {}).values()
        eligible = (p for p in pending if p.seq > after)
        batch = list(eligible) if limit < 0 else list(itertools.islice(eligible, limit))
        return claimed(sink, [(p.seq, p.event_id, p.body, p.attempts) for p in batch],
                       decode=decode)

    async def ack(self, sink: str, seqs: Sequence[int]) -> None:
        self._usable()
        pending = self._outbox.get(sink, {})
        for seq in seqs:
            pending.pop(seq, None)

    async def record_failure(self, sink: str, seqs: Sequence[int], error: str) -> None:
        self._usable()
        pending = self._outbox.get(sink, {})
        for seq in seqs:
            if (p := pending.get(seq)) is not None:
                p.attempts += 1
                p.last_error = error[:2000]

    async def bury(self, sink: str, seqs: Sequence[int], error: str, *,
                   summary: str | None = None) -> None:
        self._usable()
        pending, now = self._outbox.get(sink, {}), time.time()
        for seq in seqs:
            if (p := pending.pop(seq, None)) is not None:
                self._dead[seq] = _Dead(seq, sink, p.event_id, p.body, p.attempts + 1,
                                        error[:2000], now, summary)

    def _dead_of(self, sink: str | None, summarised: bool | None = None) -> list[_Dead]:
        return sorted((d for d in self._dead.values() if (sink is None or d.sink == sink)
                       and (summarised is None or (d.summary is not None) == summarised)),
                      key=lambda d: d.seq)

    async def dead_letters(self, sink: str | None = None, limit: int = 100, *,
                           summarised: bool | None = None) -> list[DeadLetter]:
        self._usable()
        return [DeadLetter(d.seq, d.sink, d.event_id, event_or_none(d.body), d.attempts, d.error,
                           datetime.fromtimestamp(d.failed_at, UTC), d.summary)
                for d in _limited(self._dead_of(sink, summarised), limit)]

    async def replay(self, sink: str | None = None, seqs: Sequence[int] | None = None, *,
                     summarised: bool | None = False) -> int:
        self._usable()
        wanted = set(seqs) if seqs is not None else None
        chosen = [d for d in self._dead_of(sink, summarised)
                  if wanted is None or d.seq in wanted]
        for d in chosen:
            del self._dead[d.seq]
        self._enqueue([(d.sink, d.event_id, d.body) for d in chosen], time.time())
        return len(chosen)

    async def queue_stats(self) -> list[QueueStats]:
        self._usable()
        dead: dict[str, int] = {}
        summarised: dict[str, int] = {}
        for d in self._dead.values():
            counts = dead if d.summary is None else summarised
            counts[d.sink] = counts.get(d.sink, 0) + 1
        stats = []
        for sink in sorted({s for s, rows in self._outbox.items() if rows} | set(dead)
                           | set(summarised)):
            pending = self._outbox.get(sink, {})
            oldest = min((p.created_at for p in pending.values()), default=None)
            stats.append(QueueStats(
                sink, len(pending),
                datetime.fromtimestamp(oldest, UTC) if oldest is not None else None,
                dead.get(sink, 0), summarised.get(sink, 0)))
        return stats

    # -- inspection

    async def list_items(self, scope: str | None = None, state: str | None = None,
                         limit: int = 100, *, scopes: Collection[str] | None = None,
                         kinds: Collection[str] | None = None, since: datetime | None = None,
                         severities: Collection[str] | None = None) -> list[ItemRecord]:
        self._usable()

        def wanted(r: ItemRecord) -> bool:
            return ((state is None or r.state == state) and (kinds is None or r.kind in kinds)
                    and (since is None or r.changed_at >= since)
                    and (severities is None or snapshot_severity(r.snapshot) in severities))

        found = [r for s, rows in self._items.items()
                 if (scope is None or s == scope) and (scopes is None or s in scopes)
                 for r in rows.values() if wanted(r)]
        found.sort(key=lambda r: (r.scope, r.kind, r.key))
        found.sort(key=lambda r: r.changed_at, reverse=True)  # stable: ties keep the order above
        return _limited(found, limit)

    async def item_counts(self) -> list[tuple[str, str, str, int]]:
        self._usable()
        counts: dict[tuple[str, str, str], int] = {}
        for scope, rows in self._items.items():
            for r in rows.values():
                counts[(scope, r.kind, r.state)] = counts.get((scope, r.kind, r.state), 0) + 1
        return [(*group, n) for group, n in counts.items()]

    async def sweeps(self, scope: str | None = None, limit: int = 20, *,
                     outcomes: Collection[str] | None = None) -> list[SweepRecord]:
        self._usable()
        found = [r for s, records in self._sweeps.items() if scope is None or s == scope
                 for r in records if outcomes is None or r.outcome in outcomes]
        found.sort(key=lambda r: r.id or 0, reverse=True)
        return _limited(found, limit)

    async def swept_scopes(self) -> dict[str, str]:
        self._usable()
        return {scope: records[-1].source for scope, records in self._sweeps.items() if records}

