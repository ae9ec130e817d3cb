"""The Jira sink's memory, in the state store (`sink_refs`, so every backend keeps it): which
ticket belongs to which item or group, and the creates that may or may not have happened.

Never a duplicate ticket, even across crashes:

1. before `POST /issue` an *intent* is written (the dedupe label the ticket will carry);
2. after Jira's answer, the ticket's key replaces it;
3. an intent found later (the answer was lost: a dropped connection, a `kill -9` between
   Jira's commit and ours) is settled by a search for its label, never by a second create;
   and because Jira Cloud's search is only eventually consistent (Atlassian's "search and
   reconcile" guidance), only once the intent is older than `search_horizon`, and a miss is
   searched for once more before the ticket is created again.

So the crash-free path costs one create and no search per ticket, and every later transition
finds its ticket here, without a search.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import orjson

from bridge.model import Event, utcnow
from bridge.sinks.base import ThrottledError
from bridge.store.base import SilenceRecord, SinkRef, Store

RefState = Literal["intent", "ticket", "accepted", "gone"]
LABEL_PREFIX = "bridge-"


def group_values(event: Event, group_by: Sequence[str]) -> dict[str, Any]:
    return {name: event.field_value(name) for name in group_by}


def identity(event: Event, group_by: Sequence[str] | None) -> tuple[str, str]:
    """(ledger key, dedupe label) of the ticket this event belongs to: the item's stable uid,
    or a digest of its group's values (`g-…`); a baseline summary is a ticket of its own."""
    if event.type.value == "summary":
        return f"s-{event.id}", f"{LABEL_PREFIX}s-{event.id[:20]}"
    if group_by is None:
        return event.item_uid, f"{LABEL_PREFIX}{event.item_uid}"
    material = orjson.dumps(sorted(group_values(event, group_by).items()), default=str)
    digest = hashlib.sha256(material).hexdigest()[:20]
    return f"g-{digest}", f"{LABEL_PREFIX}g-{digest}"


@dataclass(frozen=True, slots=True)
class Ticket:
    """One ledger entry. `done`: what we last made of the ticket (resolved by us or found
    resolved); `items`: a group's items by uid (title, severity, kind, key, state, link)."""

    ref: str
    label: str
    state: RefState
    since: datetime
    key: str | None = None
    id: str | None = None
    done: bool = False
    searches: int = 0
    resolution: str | None = None  # why a person closed it (accepted)
    silence: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # a group's field values
    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_ref(self, sink: str) -> SinkRef:
        value = {"label": self.label, "key": self.key, "id": self.id, "done": self.done,
                 "searches": self.searches, "resolution": self.resolution,
                 "silence": self.silence, "values": self.values, "items": self.items}
        return SinkRef(sink, self.ref, self.state,
                       orjson.dumps(value, default=str).decode(), self.since)

    @classmethod
    def of(cls, ref: SinkRef) -> Ticket:
        v = orjson.loads(ref.value)
        return cls(ref.key, v["label"], ref.state, ref.updated_at,  # type: ignore[arg-type]
                   v.get("key"), v.get("id"), bool(v.get("done")), int(v.get("searches", 0)),
                   v.get("resolution"), v.get("silence"), v.get("values") or {},
                   v.get("items") or {})

    @classmethod
    def intent(cls, ref: str, label: str, values: dict[str, Any] | None = None,
               items: dict[str, dict[str, Any]] | None = None) -> Ticket:
        """An intent to create; a group's carries its values and first item, so a ticket
        found by its label after a crash still knows its group."""
        return cls(ref, label, "intent", utcnow(), values=values or {}, items=items or {})

    @property
    def active_items(self) -> int:
        return sum(1 for i in self.items.values() if i.get("state") == "active")


class Ledger:
    """The sink's entries, read for a whole batch at once and written back in as few
    transactions as the promise allows: intents are written *before* their creates (one
    transaction for the batch's), ticket keys and state changes are staged and written by
    `flush` before the batch is reported delivered (one transaction). A crash in between
    leaves intents, which `settle` resolves: safe, and cheap on the path without crashes."""

    def __init__(self, store: Store, sink: str, *, horizon: float,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.sink = sink
        self.horizon = horizon
        self.clock = clock
        self._cache: dict[str, Ticket | None] = {}
        self._staged: dict[str, Ticket | None] = {}  # None: forget it

    async def load(self, refs: Collection[str]) -> None:
        """Read these entries in one query (what a batch's events will ask for)."""
        wanted = [r for r in refs if r not in self._cache]
        if not wanted:
            return
        found = {r.key: Ticket.of(r) for r in
                 await self.store.sink_refs(self.sink, wanted, limit=-1)}
        for ref in wanted:
            self._cache[ref] = found.get(ref)

    async def get(self, ref: str) -> Ticket | None:
        if ref not in self._cache:
            await self.load([ref])
        return self._cache[ref]

    def stage(self, ticket: Ticket) -> None:
        """Remember a change, written by the next `flush` (before the batch is acknowledged)."""
        self._cache[ticket.ref] = self._staged[ticket.ref] = ticket

    def stage_forget(self, ticket: Ticket) -> None:
        self._cache[ticket.ref] = self._staged[ticket.ref] = None

    async def flush(self) -> None:
        """Write what was staged, in one transaction, and forget the batch's cache."""
        staged, self._staged = self._staged, {}
        self._cache.clear()
        keep = [t.to_ref(self.sink) for t in staged.values() if t is not None]
        drop = [ref for ref, t in staged.items() if t is None]
        if keep:
            await self.store.put_sink_refs(keep)
        if drop:
            await self.store.delete_sink_refs(self.sink, drop)

    async def save(self, ticket: Ticket, silence: SilenceRecord | None = None) -> None:
        """Write one entry now (with the silence a person's decision makes, together)."""
        self._staged.pop(ticket.ref, None)
        await self.store.put_sink_refs([ticket.to_ref(self.sink)], silence=silence)
        self._cache[ticket.ref] = ticket

    async def intend(self, wanted: Sequence[Ticket]) -> list[Ticket]:
        """Write intents to create these tickets (`Ticket.intent`), in one transaction,
        before any of the creates is sent."""
        now = self.clock()
        intents = [replace(t, since=now) for t in wanted]
        if intents:
            for t in intents:
                self._staged.pop(t.ref, None)
                self._cache[t.ref] = t
            await self.store.put_sink_refs([t.to_ref(self.sink) for t in intents])
        return intents

    def created(self, intent: Ticket, key: str, issue_id: str | None, **changes: Any) -> Ticket:
        ticket = replace(intent, state="ticket", key=key, id=issue_id, since=self.clock(),
                         searches=0, **changes)
        self.stage(ticket)
        return ticket

    async def settle(self, intent: Ticket,
                     search: Callable[[str], Awaitable[list[str]]]) -> Ticket | None:
        """The ticket a pending intent created, found by its label; None when two searches
        (the horizon after the intent, and again after a retry) found nothing: create it then.
        Raises `ThrottledError` (no attempt spent) while the search cannot be trusted yet."""
        age = (self.clock() - intent.since).total_seconds()
        if age < self.horizon:
            raise ThrottledError(
                f"a create of the ticket labelled {intent.label} may have reached Jira "
                f"{age:.1f}s ago; its label is searched once the intent is "
                f"{self.horizon:g}s old (Jira's search lags its creates)",
                retry_after=self.horizon - age)
        keys = await search(intent.label)
        if keys:
            # Two would mean someone else created one too; the oldest is the one we keep.
            key = min(keys, key=_issue_number)
            return self.created(intent, key, None)
        if intent.searches < 1:
            await self.save(replace(intent, searches=intent.searches + 1))
            raise ThrottledError(
                f"no ticket labelled {intent.label} found yet; searching once more before "
                "creating it", retry_after=max(0.1, self.horizon / 4))
        return None


def _issue_number(key: str) -> tuple[int, str]:
    number = key.rsplit("-", 1)[-1]
    return (int(number), key) if number.isdigit() else (1 << 62, key)
