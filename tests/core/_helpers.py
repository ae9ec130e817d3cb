"""Small builders shared by the core tests: items, sweeps, events, and an in-memory store that
applies `ItemWrite`s exactly the way the SQLite store does."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.diff import DiffPolicy, DiffResult, ItemWrite, StoredItem, diff
from bridge.model import Event, EventType, Item, Sweep, event_id

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SCOPE = "so-main"


def item(key: str, *, kind: str = "finding", active: bool = True, severity: Any = "high",
         title: str | None = None, status: str = "open", **kw: Any) -> Item:
    return Item(kind=kind, key=key, title=title if title is not None else f"finding {key}",
                severity=severity, active=active, status=status, **kw)


def sweep(*items: Item, complete: bool = True, kinds: Mapping[str, bool] | None = None,
          scope: str = SCOPE) -> Sweep:
    return Sweep(scope=scope, items=tuple(items),
                 kinds=dict(kinds) if kinds is not None else {"finding": complete})


def apply_writes(store: dict[tuple[str, str], StoredItem], writes: Iterable[ItemWrite]) -> None:
    """Mirror of SQLiteStore.commit_sweep for the `items` table.

    Full writes (snapshot set) upsert the row but, like `ON CONFLICT DO UPDATE`, keep the stored
    `first_seen`; partial writes update state/misses/counter and keep tracked/snapshot, and do
    nothing when the row does not exist (an UPDATE of no row)."""
    writes = list(writes)
    for w in writes:
        if w.snapshot is None:
            continue
        assert w.tracked is not None
        old = store.get((w.kind, w.key))
        store[(w.kind, w.key)] = StoredItem(
            kind=w.kind, key=w.key, state=w.state, tracked=w.tracked, counter=w.counter,
            misses=w.misses, first_seen=old.first_seen if old else w.first_seen,
            snapshot=w.snapshot)
    for w in writes:
        if w.snapshot is not None:
            continue
        old = store.get((w.kind, w.key))
        if old is None:
            continue
        store[(w.kind, w.key)] = dataclasses.replace(old, state=w.state, misses=w.misses,
                                                     counter=w.counter)


class DictStore:
    """Runs sweeps through `diff` against a dict, like the daemon does against SQLite."""

    def __init__(self, policy: DiffPolicy | None = None) -> None:
        self.items: dict[tuple[str, str], StoredItem] = {}
        self.policy = policy or DiffPolicy()
        self.now = T0

    def run(self, s: Sweep) -> DiffResult:
        self.now += timedelta(minutes=5)
        stored = {k: v for k, v in self.items.items() if k[0] in s.kinds}
        result = diff(stored, s, self.policy, source="so", vendor="scanorbit", now=self.now)
        apply_writes(self.items, result.writes)
        return result

    def state(self, key: str, kind: str = "finding") -> str | None:
        got = self.items.get((kind, key))
        return got.state if got else None


def make_event(key: str = "k1", *, type_: EventType = EventType.NEW, counter: int = 1,
               kind: str = "finding", scope: str = SCOPE, severity: Any = "high",
               title: str | None = None, **kw: Any) -> Event:
    return Event(
        id=event_id(scope, kind, key, type_, counter), type=type_, source="so",
        vendor="scanorbit", scope=scope, kind=kind, key=key,
        title=title if title is not None else f"finding {key}", severity=severity,
        occurred_at=T0, counter=counter, **kw)
