"""A scope's stored items kept in memory from one sweep to the next, for a store whose load
costs more than the sweep's own work.

A steady sweep reads every item's state and writes almost none. Loading 50 tenants' 2,000
items each from SQLite took a quarter of such a sweep's time (bench/bench_tenants.py, 2-core
VM: 1.03-1.08 s a sweep loading, 0.73-0.80 s with the items kept), all of it rebuilding what
the previous sweep had in hand. So the store keeps what it loaded, folds in what each commit
wrote, and hands the result to the next load of the scope, as long as nobody else can have
written the file (the store checks; see `SQLiteStore.load_items`).

What was handed out is never changed: a commit's writes wait in `pending` and the next load
applies them to copies of the dicts they touch, so a sweep or a reader still holding the
previous `StoredItems` sees it as it was loaded (in the order they committed: a sweep's chunks,
then its end). Memory is bounded: a scope of more than
`KEEP_AT_MOST` items is not kept (at that size the load is a small part of the sweep), nor are
scopes beyond `KEEP_TOTAL` items in all, nor a commit of more than `PENDING_AT_MOST` writes
(a first sweep, a mass change: the next load reads the file instead).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

from bridge.diff import ItemWrite, StoredItem, StoredItems
from bridge.store.base import in_commit_order

KEEP_AT_MOST = 20_000  # items of one scope
KEEP_TOTAL = 200_000  # items of all kept scopes together (100,000 Aether365 results: 18 MB)
PENDING_AT_MOST = 2_000  # writes waiting for a scope's next load


@dataclass(slots=True)
class _Kept:
    kinds: frozenset[str]
    items: StoredItems
    size: int
    version: object  # what the store said about the file when these were loaded
    pending: list[list[ItemWrite]] = field(default_factory=list)  # one list per commit


class KeptItems:
    """The kept scopes of one store. Not thread-safe: the store calls it from one thread."""

    def __init__(self) -> None:
        self._scopes: dict[str, _Kept] = {}
        self._total = 0

    def get(self, scope: str, kinds: Collection[str], version: object) -> StoredItems | None:
        """The scope's items as the file holds them now, if they were kept under `version`
        for these `kinds`; None means: load them (and `keep` them)."""
        kept = self._scopes.get(scope)
        if kept is None:
            return None
        if kept.version != version or kept.kinds != frozenset(kinds):
            self.forget(scope)
            return None
        if kept.pending:
            kept.items = applied(kept.items, kept.pending, kept.kinds)
            kept.pending = []
            self._resize(kept, len(kept.items))
        return kept.items

    def keep(self, scope: str, kinds: Collection[str], version: object,
             items: StoredItems) -> None:
        self.forget(scope)
        size = len(items)
        # An empty scope is about to have its first sweep, which writes it all.
        if 0 < size <= KEEP_AT_MOST and self._total + size <= KEEP_TOTAL:
            self._scopes[scope] = _Kept(frozenset(kinds), items, size, version)
            self._total += size

    def committed(self, scope: str, writes: Sequence[ItemWrite]) -> None:
        """A commit of `writes` to the scope succeeded."""
        kept = self._scopes.get(scope)
        if kept is None or not writes:
            return
        if sum(map(len, kept.pending)) + len(writes) > PENDING_AT_MOST:
            self.forget(scope)
        else:
            # Without their snapshots (the bulk of a write, and never read here): "" still
            # marks a full write for `applied`.
            kept.pending.append([w if not w.snapshot else replace(w, snapshot="")
                                 for w in writes])

    def forget(self, scope: str | None = None) -> None:
        """Drop one scope (a commit failed: what the file holds is not known), or all."""
        if scope is None:
            self._scopes.clear()
            self._total = 0
        elif (kept := self._scopes.pop(scope, None)) is not None:
            self._total -= kept.size

    def _resize(self, kept: _Kept, size: int) -> None:
        self._total += size - kept.size
        kept.size = size


def applied(items: StoredItems, commits: Sequence[Sequence[ItemWrite]],
            kinds: Collection[str]) -> StoredItems:
    """`items` of `kinds` after the writes of `commits`, one commit after the other, by every
    store's rules (`bridge.store.memory.apply_item_writes` for whole rows; the order is
    `in_commit_order`): full writes create or replace an item but keep its `first_seen`,
    partial ones change the state, counter and misses of an item that exists. Writes of other
    kinds are left out, as a load of `kinds` leaves them out. The dicts a write touches are
    copies; `items` itself is left as it was."""
    by_kind = dict(items.by_kind)
    copied: set[str] = set()

    def keys_of(kind: str) -> dict[str, StoredItem] | None:
        if kind not in kinds:
            return None
        if kind not in copied:
            by_kind[kind] = dict(by_kind.get(kind, {}))
            copied.add(kind)
        return by_kind[kind]

    for writes in commits:
        for w in in_commit_order(writes):
            if (keys := keys_of(w.kind)) is None:
                continue
            old = keys.get(w.key)
            if w.snapshot is not None:
                assert w.tracked is not None  # stores refuse a snapshot without tracked fields
                keys[w.key] = StoredItem(w.kind, w.key, w.state, w.tracked, w.counter, w.misses,
                                         old.first_seen if old is not None else w.first_seen)
            elif old is not None:
                keys[w.key] = StoredItem(old.kind, old.key, w.state, old.tracked, w.counter,
                                         w.misses, old.first_seen)
    return StoredItems(by_kind)
