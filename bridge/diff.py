"""Compare one sweep with the stored state of its scope: a pure function, no I/O.

The rules (ARCHITECTURE.md): `new` the first time an active item is seen; `changed` when a
tracked field changes; `resolved` when the vendor says so or after `resolve_after_misses`
consecutive complete sweeps without the item; `reopened` when a resolved item is active again.
An incomplete part of a sweep may create and change items but never resolve them, and does not
count as a miss: a flaky page must never look like a fix.

Two per-kind refinements stay pure data: `kind_tracked_fields` chooses which fields a kind
tracks, and a `ChangeRule` decides which of their changes are worth an event. A rule sees the
stored and the new tracked values and answers `event` (emit `changed`), `update` (remember the new
values silently) or `keep` (ignore, so small changes add up against the stored baseline) — what a
score needs to report "dropped by at least N" without reporting every wobble. An item with
`judged=False` (listed without a verdict) is seen but otherwise left exactly as stored.

Reconfiguring the tracked fields (an operator's edit, or an upgrade that tracks one more field
by default) must never cause a ticket storm. A stored `tracked` list names its fields first,
`[["status", "severity"], "open", "high"]`, so old values are paired with fields by name: a list
written for other fields (even as many) has no old values to report, so the item is
re-baselined silently (the new values are written, no event) and counted in
`Differ.rebaselined` for the sweep to log once. Its next real change is then an event.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar, overload

import orjson

from bridge.model import Event, EventType, Item, JSONScalar, Sweep, event_id, normalize_severity

State = Literal["active", "resolved"]
ChangeVerdict = Literal["event", "update", "keep"]
# (stored tracked values, new tracked values) -> what to do about the difference.
ChangeRule = Callable[[Mapping[str, JSONScalar], Mapping[str, JSONScalar]], ChangeVerdict]
# The fields whose change is an event unless configured otherwise; `vendor_severity` too, so a
# vendor-side change (ScanOrbit `info` -> `trivial`, a new Ayliea priority) is reported
# even when the normalised severity stays the same.
TRACKED_FIELDS: tuple[str, ...] = ("title", "severity", "vendor_severity", "status")


@dataclass(frozen=True, slots=True)
class DiffPolicy:
    resolve_after_misses: int = 2
    tracked_fields: tuple[str, ...] = TRACKED_FIELDS
    # Per-kind overrides, for sources whose kinds change in different ways (e.g. scores).
    kind_tracked_fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Per-kind rules for which tracked changes are events; a kind without one: every change.
    change_rules: Mapping[str, ChangeRule] = field(default_factory=dict)


def drop_rule(name: str, threshold: float, *, also: tuple[str, ...] = ()) -> ChangeRule:
    """An event when numeric `name` fell by at least `threshold` or a field in `also` changed.

    A rise raises the baseline silently; a smaller fall keeps it, so that several small drops
    add up to a reported one (72 -> 70 -> 67 reports 72 -> 67 at a threshold of 5).
    """

    def rule(old: Mapping[str, JSONScalar], new: Mapping[str, JSONScalar]) -> ChangeVerdict:
        if any(old.get(f) != new.get(f) for f in also):
            return "event"
        before, after = old.get(name), new.get(name)
        if not (_number(before) and _number(after)):
            return "event" if before != after else "update"
        assert isinstance(before, int | float) and isinstance(after, int | float)
        if before - after >= threshold:
            return "event"
        return "update" if after > before else "keep"

    return rule


def _number(value: JSONScalar) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    # Loaded only when needed (an absent item being resolved): the rest of the time it is the
    # bulk of the row and nobody reads it.
    snapshot: str | None = None

    def as_item(self, snapshot: str | None) -> Item:
        """The item as last seen, for the event that resolves it in its absence."""
        data: dict[str, Any] = orjson.loads(snapshot) if snapshot else {}
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


_T = TypeVar("_T")
_Keys = TypeVar("_Keys", bound=Collection[str])
Ident = tuple[str, str]  # (kind, key)


class _ByKind(Generic[_Keys]):
    """`(kind, key)` pairs held as one collection of key strings per kind (what `StoredItems`
    and `Seen` share): no tuple kept per item."""

    __slots__ = ()
    by_kind: dict[str, _Keys]

    def __contains__(self, ident: object) -> bool:
        if not isinstance(ident, tuple) or len(ident) != 2:
            return False
        keys = self.by_kind.get(ident[0])
        return keys is not None and ident[1] in keys

    def __iter__(self) -> Iterator[Ident]:
        for kind, keys in self.by_kind.items():
            for key in keys:
                yield kind, key

    def __len__(self) -> int:
        return sum(map(len, self.by_kind.values()))


class StoredItems(_ByKind[dict[str, StoredItem]], Mapping[Ident, StoredItem]):
    """A scope's stored items, as `Store.load_items` returns them: a mapping of `(kind, key)`
    to `StoredItem` for its readers, held as one dict of key -> item per kind.

    The nesting is for memory: a flat dict keeps one `(kind, key)` tuple alive per item (56 B,
    17 MB at 300k items, all of it during a sweep's peak), and the diff, which has the kind and
    the key of each item it is fed, looks them up without building one. Each item's dict key is
    the item's own `key` string, so nothing else needs a copy of it (see `Differ.feed`).
    """

    __slots__ = ("by_kind",)

    def __init__(self, by_kind: dict[str, dict[str, StoredItem]] | None = None) -> None:
        self.by_kind: dict[str, dict[str, StoredItem]] = {} if by_kind is None else by_kind

    @classmethod
    def of(cls, items: Mapping[Ident, StoredItem]) -> StoredItems:
        """`items` itself if it already is one, else a regrouped copy (tests build plain dicts)."""
        if isinstance(items, StoredItems):
            return items
        out = cls()
        for (kind, key), item in items.items():
            out.by_kind.setdefault(kind, {})[key] = item
        return out

    def __getitem__(self, ident: Ident) -> StoredItem:
        kind, key = ident
        return self.by_kind[kind][key]

    @overload
    def get(self, ident: Ident, /) -> StoredItem | None: ...
    @overload
    def get(self, ident: Ident, /, default: StoredItem | _T) -> StoredItem | _T: ...

    def get(self, ident: Ident, /, default: object = None) -> object:
        keys = self.by_kind.get(ident[0])
        return default if keys is None else keys.get(ident[1], default)

    def __repr__(self) -> str:
        return f"StoredItems({dict(self.items())!r})"


class Seen(_ByKind[set[str]], Collection[Ident]):
    """The `(kind, key)` pairs a `Differ` was fed, held as one set of key strings per kind:
    no tuple per item, and for a stored item the store's own copy of its key string (it lives
    on in `StoredItems` anyway), so the vendor's copy can go with its page. At 300k items this
    is ~100 B an item less than a set of tuples holding the vendor's strings."""

    __slots__ = ("by_kind",)

    def __init__(self) -> None:
        self.by_kind: dict[str, set[str]] = {}

    def of(self, kind: str) -> set[str]:
        keys = self.by_kind.get(kind)
        if keys is None:
            keys = self.by_kind[kind] = set()
        return keys


_NOTHING_STORED: dict[str, StoredItem] = {}
_NOTHING_SEEN: frozenset[str] = frozenset()


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
    rebaselined: int = 0


def snapshot_json(item: Item) -> str:
    return orjson.dumps(
        {
            "title": item.title,
            "severity": item.severity,
            "vendor_severity": item.vendor_severity,
            "status": item.status,
            "tenant": item.tenant,
            "attributes": item.attributes,
            "raw": item.raw,
        },
        default=str,
    ).decode()


def tracked_getter(fields: tuple[str, ...]) -> Callable[[Item], tuple[Any, ...]]:
    """A fast reader of the tracked values: plain attributes via one attrgetter."""
    if all(not f.startswith("attributes.") for f in fields):
        get = operator.attrgetter(*fields)
        if len(fields) == 1:
            return lambda item: (get(item),)
        return get
    return lambda item: tuple(item.tracked_value(f) for f in fields)


def stored_values(stored: str, fields: tuple[str, ...]) -> list[JSONScalar] | None:
    """The stored tracked values in the order of `fields`, or None when they were tracked for
    other fields and cannot be paired with these.

    A list without names was written before they were stored: it holds values only, and is
    taken as tracked for `fields` when it has as many, as it was then."""
    loaded = orjson.loads(stored)
    if not isinstance(loaded, list):
        return None
    if not (loaded and isinstance(loaded[0], list)):
        return loaded if len(loaded) == len(fields) else None
    names, values = loaded[0], loaded[1:]
    if len(names) != len(fields) or len(values) != len(fields) or set(names) != set(fields):
        return None
    by_name = dict(zip(names, values, strict=True))
    return [by_name[f] for f in fields]


class Differ:
    """The diff, fed page by page so a 100k-item sweep never sits in memory at once.

    `feed` handles what can be decided from an item alone (new, changed, reopened); vendor
    resolutions wait for `finish`, because only then is it known whether the sweep was
    complete. `take` hands over what has accumulated so the caller can commit in chunks.
    `stored` is read, never changed (a plain mapping is regrouped into a `StoredItems` copy).
    """

    def __init__(
        self,
        stored: Mapping[tuple[str, str], StoredItem],
        policy: DiffPolicy,
        *,
        scope: str,
        source: str,
        vendor: str,
        now: datetime,
    ) -> None:
        self.stored, self.policy = StoredItems.of(stored), policy
        self.scope, self.source, self.vendor, self.now = scope, source, vendor, now
        self.seen = Seen()
        self.events: list[Event] = []
        self.writes: list[ItemWrite] = []
        self._vendor_resolved: list[Item] = []
        self.event_count = 0
        # Items whose stored tracked list predates a reconfiguration of their fields, written
        # anew without an event (see the module docstring).
        self.rebaselined = 0
        # Per kind: its tracked fields' names, as every stored list begins, and their reader.
        self._tracking: dict[str, tuple[list[str], Callable[[Item], tuple[Any, ...]]]] = {}

    def fields(self, kind: str) -> tuple[str, ...]:
        return self.policy.kind_tracked_fields.get(kind, self.policy.tracked_fields)

    def tracked(self, item: Item) -> str:
        """`[[names...], values...]`: what is stored, and compared as text while unchanged."""
        tracking = self._tracking.get(item.kind)
        if tracking is None:
            fields = self.fields(item.kind)
            tracking = self._tracking[item.kind] = (list(fields), tracked_getter(fields))
        names, get = tracking
        return orjson.dumps((names, *get(item)), default=str).decode()

    def _emit(self, type_: EventType, item: Item, counter: int, reason: str,
              changes: Mapping[str, tuple[JSONScalar, JSONScalar]] | None = None) -> None:
        self.event_count += 1
        self.events.append(Event(
            id=event_id(self.scope, item.kind, item.key, type_, counter),
            type=type_, source=self.source, vendor=self.vendor, scope=self.scope,
            tenant=item.tenant, kind=item.kind, key=item.key, title=item.title,
            severity=item.severity, vendor_severity=item.vendor_severity, status=item.status,
            reason=reason, counter=counter, occurred_at=self.now, changes=changes or {},
            attributes=item.attributes, raw=item.raw,
        ))

    def known(self, kind: str, key: str) -> bool:
        """Whether the item is stored or was seen already in this sweep."""
        return (kind, key) in self.stored or (kind, key) in self.seen

    def feed(self, items: Iterable[Item]) -> None:
        now, writes, by_kind = self.now, self.writes, self.stored.by_kind
        kind: str | None = None
        seen: set[str] = set()
        stored = _NOTHING_STORED
        for item in items:
            if item.kind != kind:  # a page is usually of one kind: look it up once a run
                kind = item.kind
                seen, stored = self.seen.of(kind), by_kind.get(kind, _NOTHING_STORED)
            key = item.key
            if key in seen:
                continue  # a drifting page served it twice; the first copy is as good as any
            old = stored.get(key)
            # The stored copy of the key when there is one (see `Seen`).
            seen.add(key if old is None else old.key)
            if not item.judged:
                continue
            if not item.active:
                if old is not None and old.state == "active":
                    self._vendor_resolved.append(item)
                continue
            tracked = self.tracked(item)
            if old is None:
                self._emit(EventType.NEW, item, 1, "first seen")
                writes.append(ItemWrite(item.kind, item.key, "active", 1, 0, now, now, tracked,
                                        snapshot_json(item)))
            elif old.state == "resolved":
                counter = old.counter + 1
                self._emit(EventType.REOPENED, item, counter, "active again after resolution")
                writes.append(ItemWrite(item.kind, item.key, "active", counter, 0, old.first_seen,
                                        now, tracked, snapshot_json(item)))
            elif tracked != old.tracked:
                self._retracked(item, old, tracked)
            elif old.misses:
                writes.append(ItemWrite(item.kind, item.key, "active", old.counter, 0,
                                        old.first_seen, now))

    def _retracked(self, item: Item, old: StoredItem, tracked: str) -> None:
        """The tracked text differs from the stored one: a change, judged by the kind's rule;
        or nothing to report, when the stored values were tracked for other fields or are the
        same values written another way (without names, in another order)."""
        fields = self.fields(item.kind)
        before = stored_values(old.tracked, fields)
        after: list[JSONScalar] = orjson.loads(tracked)[1:]
        if before is None:  # tracked for other fields: no old values to report
            self.rebaselined += 1
            before = after
        changes = {f: (b, a) for f, b, a in zip(fields, before, after, strict=True) if b != a}
        rule = self.policy.change_rules.get(item.kind)
        verdict: ChangeVerdict
        if not changes:
            verdict = "update"
        elif rule is None:
            verdict = "event"
        else:
            verdict = rule(dict(zip(fields, before, strict=True)),
                           dict(zip(fields, after, strict=True)))
        counter = old.counter
        if verdict == "event":
            counter += 1
            self._emit(EventType.CHANGED, item, counter, "changed: " + ", ".join(changes),
                       changes)
        if verdict == "keep":  # the stored values stay the baseline the next change meets
            if old.misses:
                self.writes.append(ItemWrite(item.kind, item.key, "active", old.counter, 0,
                                             old.first_seen, self.now))
            return
        self.writes.append(ItemWrite(item.kind, item.key, "active", counter, 0, old.first_seen,
                                     self.now, tracked, snapshot_json(item)))

    def absentees(self, kinds: Mapping[str, bool]) -> list[tuple[str, str]]:
        """Items `finish` will resolve for absence: their snapshots are needed for the events."""
        limit = self.policy.resolve_after_misses
        return [(kind, key) for kind, key, old in self._unseen(kinds) if old.misses + 1 >= limit]

    def _unseen(self, kinds: Mapping[str, bool]) -> Iterator[tuple[str, str, StoredItem]]:
        """The active stored items of the complete kinds that this sweep did not see."""
        for kind, stored in self.stored.by_kind.items():
            if not kinds.get(kind, False):
                continue
            seen = self.seen.by_kind.get(kind, _NOTHING_SEEN)
            if len(seen) >= len(stored) and seen.issuperset(stored):
                continue  # every stored item was listed (a steady sweep): checked in C
            for key, old in stored.items():
                if old.state == "active" and key not in seen:
                    yield kind, key, old

    def finish(self, kinds: Mapping[str, bool], snapshots: Mapping[tuple[str, str], str]) -> None:
        """Resolve what the now-known completeness allows; count misses for the absent."""
        now, writes = self.now, self.writes
        for item in self._vendor_resolved:
            if not kinds.get(item.kind, False):
                continue  # an incomplete sweep never resolves, not even on the vendor's word
            old = self.stored.by_kind[item.kind][item.key]
            counter = old.counter + 1
            self._emit(EventType.RESOLVED, item, counter, item.resolution or "resolved by vendor")
            writes.append(ItemWrite(item.kind, item.key, "resolved", counter, 0, old.first_seen,
                                    now, self.tracked(item), snapshot_json(item), now))
        for kind, key, old in self._unseen(kinds):
            misses = old.misses + 1
            if misses < self.policy.resolve_after_misses:
                writes.append(ItemWrite(old.kind, old.key, "active", old.counter, misses,
                                        old.first_seen, now))
                continue
            counter = old.counter + 1
            snapshot = snapshots.get((kind, key), old.snapshot)
            self._emit(EventType.RESOLVED, old.as_item(snapshot), counter,
                       f"absent from {misses} consecutive complete sweeps")
            writes.append(ItemWrite(old.kind, old.key, "resolved", counter, misses,
                                    old.first_seen, now, resolved_at=now))

    def take(self) -> tuple[list[ItemWrite], list[Event]]:
        """Hand over (and forget) the writes and events accumulated so far."""
        writes, events = self.writes, self.events
        self.writes, self.events = [], []
        return writes, events


def diff(
    stored: Mapping[tuple[str, str], StoredItem],
    sweep: Sweep,
    policy: DiffPolicy,
    *,
    source: str,
    vendor: str,
    now: datetime,
) -> DiffResult:
    """Events and row writes for a whole `sweep` against `stored` (all items of its kinds)."""
    differ = Differ(stored, policy, scope=sweep.scope, source=source, vendor=vendor, now=now)
    differ.feed(sweep.items)
    differ.finish(sweep.kinds, {})
    writes, events = differ.take()
    return DiffResult(events, writes, len(differ.seen), differ.rebaselined)
