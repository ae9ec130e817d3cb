"""Compare one sweep with the stored state of its scope: a pure function, no I/O.

The rules (ARCHITECTURE.md): `new` the first time an active item is seen; `changed` when a
tracked field changes; `resolved` when the vendor says so or after `resolve_after_misses`
consecutive complete sweeps without the item; `reopened` when a resolved item is active again.
An incomplete part of a sweep may create and change items but never resolve them, and does not
count as a miss: a flaky page must never look like a fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from bridge.model import Event, EventType, Item, JSONScalar, Sweep, event_id, normalize_severity

State = Literal["active", "resolved"]


@dataclass(frozen=True, slots=True)
class DiffPolicy:
    resolve_after_misses: int = 2
    tracked_fields: tuple[str, ...] = ("title", "severity", "status")


@dataclass(slots=True)
class StoredItem:
    """What the store remembers of one item. `tracked` and `snapshot` stay JSON text so that
    loading 100k unchanged items costs no decoding."""

    kind: str
    key: str
    state: State
    tracked: str
    counter: int
    misses: int
    first_seen: datetime
    snapshot: str

    def snapshot_item(self) -> Item:
        data: dict[str, Any] = json.loads(self.snapshot)
        return Item(
            kind=self.kind,
            key=self.key,
            title=data.get("title", ""),
            severity=normalize_severity(data.get("severity")),
            active=self.state == "active",
            vendor_severity=data.get("vendor_severity", ""),
            status=data.get("status", ""),
            tenant=data.get("tenant", ""),
            attributes=data.get("attributes", {}),
            raw=data.get("raw", {}),
        )


@dataclass(frozen=True, slots=True)
class ItemWrite:
    """One row to upsert. `snapshot`/`tracked` None keeps what is stored (a miss count update)."""

    kind: str
    key: str
    state: State
    counter: int
    misses: int
    first_seen: datetime
    changed_at: datetime
    tracked: str | None = None
    snapshot: str | None = None
    resolved_at: datetime | None = None


@dataclass(slots=True)
class DiffResult:
    events: list[Event] = field(default_factory=list)
    writes: list[ItemWrite] = field(default_factory=list)
    seen: int = 0


def snapshot_json(item: Item) -> str:
    return json.dumps(
        {
            "title": item.title,
            "severity": item.severity,
            "vendor_severity": item.vendor_severity,
            "status": item.status,
            "tenant": item.tenant,
            "attributes": dict(item.attributes),
            "raw": item.raw,
        },
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )


def tracked_json(item: Item, fields: tuple[str, ...]) -> str:
    return json.dumps(list(item.tracked(fields).values()), separators=(",", ":"), default=str)


def _changes(old: str, new: str, fields: tuple[str, ...]) -> dict[str, tuple[JSONScalar, JSONScalar]]:
    before, after = json.loads(old), json.loads(new)
    if not isinstance(before, list) or len(before) != len(fields):
        # Tracked fields were reconfigured: report what we can, old values unknown.
        return {f: (None, a) for f, a in zip(fields, after, strict=True)}
    return {f: (b, a) for f, b, a in zip(fields, before, after, strict=True) if b != a}


class _Emitter:
    """Builds events for one sweep; keeps `diff` itself a readable list of rules."""

    def __init__(self, sweep: Sweep, source: str, vendor: str, now: datetime) -> None:
        self.sweep, self.source, self.vendor, self.now = sweep, source, vendor, now
        self.result = DiffResult()

    def event(
        self,
        type_: EventType,
        item: Item,
        counter: int,
        reason: str,
        changes: Mapping[str, tuple[JSONScalar, JSONScalar]] | None = None,
    ) -> None:
        self.result.events.append(
            Event(
                id=event_id(self.sweep.scope, item.kind, item.key, type_, counter),
                type=type_,
                source=self.source,
                vendor=self.vendor,
                scope=self.sweep.scope,
                tenant=item.tenant,
                kind=item.kind,
                key=item.key,
                title=item.title,
                severity=item.severity,
                vendor_severity=item.vendor_severity,
                status=item.status,
                reason=reason,
                counter=counter,
                occurred_at=self.now,
                changes=changes or {},
                attributes=item.attributes,
                raw=item.raw,
            )
        )


def diff(
    stored: Mapping[tuple[str, str], StoredItem],
    sweep: Sweep,
    policy: DiffPolicy,
    *,
    source: str,
    vendor: str,
    now: datetime,
) -> DiffResult:
    """Events and row writes for `sweep` against `stored` (all stored items of its kinds)."""
    out = _Emitter(sweep, source, vendor, now)
    writes = out.result.writes
    fields = policy.tracked_fields
    seen: set[tuple[str, str]] = set()

    for item in sweep.items:
        ident = (item.kind, item.key)
        if ident in seen:
            continue  # a drifting page served it twice; the first copy is as good as any
        seen.add(ident)
        may_resolve = sweep.kinds.get(item.kind, False)
        old = stored.get(ident)
        if not item.active:
            if old is None or old.state == "resolved" or not may_resolve:
                continue
            counter = old.counter + 1
            out.event(EventType.RESOLVED, item, counter, item.resolution or "resolved by vendor")
            writes.append(ItemWrite(item.kind, item.key, "resolved", counter, 0, old.first_seen,
                                    now, tracked_json(item, fields), snapshot_json(item), now))
            continue
        tracked = tracked_json(item, fields)
        if old is None:
            out.event(EventType.NEW, item, 1, "first seen")
            writes.append(ItemWrite(item.kind, item.key, "active", 1, 0, now, now, tracked,
                                    snapshot_json(item)))
        elif old.state == "resolved":
            counter = old.counter + 1
            out.event(EventType.REOPENED, item, counter, "active again after resolution")
            writes.append(ItemWrite(item.kind, item.key, "active", counter, 0, old.first_seen, now,
                                    tracked, snapshot_json(item)))
        elif tracked != old.tracked:
            counter = old.counter + 1
            changes = _changes(old.tracked, tracked, fields)
            reason = "changed: " + ", ".join(changes)
            out.event(EventType.CHANGED, item, counter, reason, changes)
            writes.append(ItemWrite(item.kind, item.key, "active", counter, 0, old.first_seen, now,
                                    tracked, snapshot_json(item)))
        elif old.misses:
            writes.append(ItemWrite(item.kind, item.key, "active", old.counter, 0, old.first_seen,
                                    now))

    for ident, old in stored.items():
        if old.state != "active" or ident in seen or not sweep.kinds.get(old.kind, False):
            continue
        misses = old.misses + 1
        if misses < policy.resolve_after_misses:
            writes.append(ItemWrite(old.kind, old.key, "active", old.counter, misses,
                                    old.first_seen, now))
            continue
        counter = old.counter + 1
        item = old.snapshot_item()
        out.event(EventType.RESOLVED, item, counter,
                  f"absent from {misses} consecutive complete sweeps")
        writes.append(ItemWrite(old.kind, old.key, "resolved", counter, misses, old.first_seen,
                                now, resolved_at=now))

    out.result.seen = len(seen)
    return out.result
