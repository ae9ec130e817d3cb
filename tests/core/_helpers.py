"""Small builders shared by the core tests: items, sweeps, events, and a synchronous item table
that applies `ItemWrite`s by the rules every store follows (bridge/store/memory.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.diff import DiffPolicy, DiffResult, ItemWrite, StoredItem, diff
from bridge.model import Event, EventType, Item, Sweep, event_id
from bridge.store.base import ItemRecord
from bridge.store.memory import apply_item_writes

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


def apply_writes(store: dict[tuple[str, str], StoredItem], writes: Iterable[ItemWrite],
                 scope: str = SCOPE) -> None:
    """Every store's item rules (`bridge.store.memory.apply_item_writes`) applied to a dict of
    `StoredItem`s with their snapshots, for tests that keep one. `changed_at` and
    `resolved_at` are not in a `StoredItem`, and nothing it holds depends on them."""
    rows = {k: ItemRecord(scope, v.kind, v.key, v.state, v.tracked, v.counter, v.misses,
                          v.first_seen, v.first_seen, None, v.snapshot or "")
            for k, v in store.items()}
    apply_item_writes(rows, scope, list(writes))
    store.clear()
    store.update({k: r.stored(with_snapshot=True) for k, r in rows.items()})


class DictStore:
    """Runs sweeps through `diff` like the daemon does, keeping item rows by the memory
    store's rules (synchronously: hypothesis drives thousands of sweeps)."""

    def __init__(self, policy: DiffPolicy | None = None) -> None:
        self.rows: dict[tuple[str, str], ItemRecord] = {}
        self.policy = policy or DiffPolicy()
        self.now = T0

    @property
    def items(self) -> dict[tuple[str, str], StoredItem]:
        """Every item as the diff sees it, snapshots included."""
        return {k: r.stored(with_snapshot=True) for k, r in self.rows.items()}

    def run(self, s: Sweep) -> DiffResult:
        self.now += timedelta(minutes=5)
        stored = {k: v for k, v in self.items.items() if k[0] in s.kinds}
        result = diff(stored, s, self.policy, source="so", vendor="scanorbit", now=self.now)
        apply_item_writes(self.rows, s.scope, result.writes)
        return result

    def state(self, key: str, kind: str = "finding") -> str | None:
        got = self.rows.get((kind, key))
        return got.state if got else None


def make_event(key: str = "k1", *, type_: EventType = EventType.NEW, counter: int = 1,
               kind: str = "finding", scope: str = SCOPE, severity: Any = "high",
               title: str | None = None, **kw: Any) -> Event:
    return Event(
        id=event_id(scope, kind, key, type_, counter), type=type_, source="so",
        vendor="scanorbit", scope=scope, kind=kind, key=key,
        title=title if title is not None else f"finding {key}", severity=severity,
        occurred_at=T0, counter=counter, **kw)
