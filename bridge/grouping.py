"""Digests and the storm guard: Alertmanager's aggregation groups, made durable by living on
outbox rows.

A sink worker with grouping on (a digest sink's `group_by`, a route's, or any sink's storm
guard) hands every row it claims to a `Grouper` instead of sending it at once.
The grouper is the whole policy and does no I/O (time is an argument), so it is tested without
a clock or a socket; the worker sends what `plan` says and acknowledges each event once the
message carrying it was accepted. Nothing about a group is stored: the rows stay in the outbox
until their message is accepted, so a restart re-forms the groups from the same rows, neither
losing an event nor sending one that an accepted message already carried.

Semantics (Alertmanager's):
- events with equal `group_by` values form a group; the first waits `group_wait` for company,
  then one message carries the group (a group of one is sent as that event itself); events
  joining a group that already went out wait for the next `group_interval` tick; a group is
  forgotten once it is empty and a `group_interval` has passed.
- a message carries at most `max_batch` events; a bigger group goes as several digests.
- a route may set `group_by`, `group_wait`, `group_interval` and `max_batch` for the events it
  sends to a sink (bridge/routing.py, inherited by its child routes field by field); they
  override the sink's, and the route is part of the group: two routes never share a group, as
  in Alertmanager. The worker learns each row's `GroupRule` from the route tree when it claims
  the row, so a restart re-forms the same groups from the same rows and config.
- one item's events never overtake each other: an event waits while an earlier event of its
  item is still pending anywhere else, and one plan puts an item in one message only.
- the storm guard (`max_events_per_minute`) counts the events sent in the last minute; what a
  plan would send beyond it is set aside and, once per `summary_interval`, collapses into one
  summary message (counts by severity and source, the `summary_top` most severe items). Those
  events are acknowledged as *summarised*: kept whole beside the dead letters with the
  summary's id (`Store.bury(summary=)`), listed by `bridge state summarised` and `bridge dlq
  list`, and sent one by one by `bridge dlq replay --kind summarised`. Any sink can have the
  guard: a `DigestSink` words the summary itself, any other sink gets it as one event
  (`summary_event`) in its own format.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, field_validator

from bridge.model import SEVERITY_RANK, Event, EventType, JSONScalar, utcnow
from bridge.sinks.base import Sink
from bridge.store.base import Delivery

STORM_WINDOW = 60.0  # the guard counts events per minute
# Event fields a group may be keyed on, besides `attributes.<name>`.
GROUPABLE = frozenset({"type", "source", "vendor", "scope", "tenant", "kind", "severity",
                       "status", "vendor_severity", "title", "key"})

GroupKey = tuple[tuple[str, JSONScalar], ...]


class StormGuardSettings(BaseModel):
    """The storm guard of a sink (mixed into its config): every sink can have one, since a
    summary is rendered by the sink itself (a digest sink's own message, or `summary_event`
    through any sink's format: a CEF line, a JSON line)."""

    # At most this many events a minute; the excess is summarised. Off by default (the chat
    # presets turn it on).
    max_events_per_minute: int | None = Field(default=None, ge=1)
    summary_interval: float = Field(default=60.0, gt=0)
    summary_top: int = Field(default=10, ge=1, le=100)
    # Rows held in memory while they wait; when full, the waiting groups (and the summary) go
    # out early rather than hold more (a 100k-finding first sweep must not sit in memory).
    group_buffer: int = Field(default=10_000, ge=10, le=1_000_000)

    @property
    def grouping(self) -> bool:
        """Does the worker hold rows for digests or the storm guard at all?"""
        return self.max_events_per_minute is not None

    def rule(self, route: RouteGrouping | None = None) -> GroupRule:
        """Without digests every event is sent as itself."""
        return UNGROUPED


class GroupingSettings(StormGuardSettings):
    """Digest and storm-guard settings of a sink that can send digests (`DigestSink`).
    Grouping is off unless `group_by` is set; `group_by: []` puts every event into one group,
    as in Alertmanager."""

    group_by: list[str] | None = None
    group_wait: float = Field(default=30.0, ge=0)
    group_interval: float = Field(default=300.0, gt=0)
    max_batch: int = Field(default=50, ge=1, le=1000)

    @field_validator("group_by")
    @classmethod
    def _known_group_fields(cls, value: list[str] | None) -> list[str] | None:
        return check_group_by(value)

    @property
    def grouping(self) -> bool:
        return self.group_by is not None or self.max_events_per_minute is not None

    def rule(self, route: RouteGrouping | None = None) -> GroupRule:
        """How the events of one route are grouped at this sink: what the route sets, the
        sink's settings for the rest."""
        if route is None:
            return GroupRule(None, None if self.group_by is None else tuple(self.group_by),
                             self.group_wait, self.group_interval, self.max_batch)
        by = route.group_by if route.group_by is not None else self.group_by
        return GroupRule(route.route, None if by is None else tuple(by),
                         _first(route.group_wait, self.group_wait),
                         _first(route.group_interval, self.group_interval),
                         route.max_batch if route.max_batch is not None else self.max_batch)


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


def check_group_by(value: list[str] | None) -> list[str] | None:
    """ValueError unless every name is an event field a group may be keyed on (what a sink's
    and a route's `group_by` accept)."""
    for name in value or ():
        if name not in GROUPABLE and not (name.startswith("attributes.") and len(name) > 11):
            known = ", ".join(sorted(GROUPABLE))
            raise ValueError(f"unknown event field {name!r} (known: {known}, "
                             "attributes.<name>)")
    return value


@dataclass(frozen=True, slots=True)
class RouteGrouping:
    """What a route (and the routes above it) set of the grouping settings, for the sinks it
    chose; None is "the sink's". `route` names the route: its name, or its place in the tree
    (`routes.routes[1]`)."""

    route: str
    group_by: tuple[str, ...] | None = None
    group_wait: float | None = None
    group_interval: float | None = None
    max_batch: int | None = None


@dataclass(frozen=True, slots=True)
class GroupRule:
    """How one event is grouped at one sink (`GroupingSettings.rule`): `route` is None where
    the sink's own settings apply; `group_by` None sends each event as itself."""

    route: str | None
    group_by: tuple[str, ...] | None
    group_wait: float
    group_interval: float
    max_batch: int


UNGROUPED = GroupRule(None, None, 0.0, 1.0, 1)


@dataclass(frozen=True, slots=True)
class Digest:
    """Several events of one group, in one message."""

    group: GroupKey
    events: tuple[Event, ...]
    route: str | None = None  # the route whose grouping formed it; None: the sink's

    @property
    def id(self) -> str:
        """Deterministic: the same events make the same id, so a receiver can drop a digest
        that is sent again after a crash between its acceptance and its acknowledgement."""
        return "dg-" + _digest_of(e.id for e in self.events)

    @property
    def key(self) -> str:
        """Stable for the group across digests (PagerDuty's dedup_key for the group). A
        route's group is another group than the sink's (or another route's) with the same
        values, so the route is part of its key."""
        parts = [f"{name}={value}" for name, value in self.group]
        return "group-" + _digest_of(parts if self.route is None else [self.route, *parts])

    @property
    def label(self) -> str:
        return ", ".join(f"{name}={value}" for name, value in self.group) or "all events"

    @property
    def worst(self) -> Event:
        return max(self.events, key=lambda e: SEVERITY_RANK[e.severity])


@dataclass(frozen=True, slots=True)
class StormSummary:
    """What the storm guard set aside, collapsed into one message."""

    sink: str
    events: tuple[Event, ...]
    limit: int  # max_events_per_minute
    top_n: int

    @property
    def id(self) -> str:
        return "sm-" + _digest_of(e.id for e in self.events)

    @property
    def by_severity(self) -> dict[str, int]:
        counts = Counter(e.severity for e in self.events)
        return {s: counts[s] for s in sorted(counts, key=lambda s: -SEVERITY_RANK[s])}

    @property
    def by_source(self) -> dict[str, int]:
        return dict(Counter(e.source for e in self.events).most_common())

    @property
    def top(self) -> tuple[Event, ...]:
        """The most severe events, oldest first among equals."""
        ranked = sorted(enumerate(self.events),
                        key=lambda p: (-SEVERITY_RANK[p[1].severity], p[0]))
        return tuple(e for _, e in ranked[:self.top_n])

    @property
    def worst(self) -> Event:
        return max(self.events, key=lambda e: SEVERITY_RANK[e.severity])

    @property
    def listing(self) -> str:
        """The command that lists every event the summary carried (its message says it)."""
        return f"bridge state summarised --sink {self.sink} --summary {self.id}"


STORM_KIND = "storm"


def summary_event(summary: StormSummary) -> Event:
    """A storm summary as one event (`type: summary`, kind `storm`), for sinks without a
    message of their own for it: their format renders it like any event (a CEF or LEEF line,
    a JSON line), so a SIEM or an archive sees the storm where it sees events. Counts are in
    `attributes` (total, per severity, per source); the most severe events in brief and every
    summarised event id in `raw`. Its id is the summary's: sent again after a crash, it is the
    same event."""
    worst = summary.worst
    shown = ", ".join(f"{n} {s}" for s, n in summary.by_severity.items())
    return Event(
        id=summary.id, type=EventType.SUMMARY, source="bridge", vendor="bridge",
        scope=summary.sink, kind=STORM_KIND, key=summary.id,
        title=f"Event storm: {len(summary.events)} events summarised (over "
              f"{summary.limit}/minute): {shown}",
        severity=worst.severity, occurred_at=utcnow(), counter=1,
        reason=f"storm guard: more than {summary.limit} events a minute for sink "
               f"{summary.sink}; the excess is summarised, each event listed by "
               f"`{summary.listing}`",
        attributes={"total": len(summary.events), "limit_per_minute": summary.limit,
                    **{f"severity_{s}": n for s, n in summary.by_severity.items()},
                    **{f"source_{s}": n for s, n in summary.by_source.items()}},
        raw={"top": [{"id": e.id, "type": e.type.value, "source": e.source,
                      "scope": e.scope, "kind": e.kind, "key": e.key, "title": e.title,
                      "severity": e.severity} for e in summary.top],
             "event_ids": [e.id for e in summary.events]},
    )


async def send_summary(sink: Sink[Any], summary: StormSummary) -> None:
    """Deliver a storm summary: a digest sink's own message, any other sink's `summary_event`."""
    if isinstance(sink, DigestSink):
        await sink.send_summary(summary)
    else:
        await sink.send([summary_event(summary)])


def _digest_of(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()[:32]


class DigestSink(ABC):
    """A sink that can carry several events in one message and summarise a storm. The same
    error types as `send` apply (bridge/sinks/base.py); a refusal covers the whole message."""

    @abstractmethod
    async def send_digest(self, digest: Digest) -> None: ...

    @abstractmethod
    async def send_summary(self, summary: StormSummary) -> None: ...


# A group inside the worker: the route whose rule formed it (None: the sink's) and its values.
_Key = tuple[str | None, GroupKey]


@dataclass(slots=True)
class _Group:
    key: GroupKey
    rule: GroupRule
    opened_at: float
    flushed_at: float | None = None
    seqs: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Message:
    """One message of a plan: `digest` is None for single events sent as themselves (all the
    plan's singles go in one `send`, the per-item delivery of the sink)."""

    rows: list[Delivery]
    digest: Digest | None = None


@dataclass(slots=True)
class Plan:
    summary: list[Delivery] = field(default_factory=list)  # set aside, now due as one summary
    messages: list[Message] = field(default_factory=list)
    engaged: bool = False  # the storm guard began setting events aside in this plan

    @property
    def empty(self) -> bool:
        return not self.summary and not self.messages


class Grouper:
    """The rows a worker holds, their groups, the storm pool and the guard's window.

    `rule_of` says how an event is grouped (the route tree's say, `GroupingSettings.rule`);
    without it every event follows the sink's settings."""

    def __init__(self, settings: StormGuardSettings,
                 rule_of: Callable[[Event], GroupRule] | None = None) -> None:
        self.settings = settings
        own = settings.rule()
        self._rule_of = rule_of or (lambda _event: own)
        self.cursor = 0  # highest seq claimed
        self._rows: dict[int, Delivery] = {}  # pending, in seq order
        self._group_of: dict[int, _Key] = {}
        self._groups: dict[_Key, _Group] = {}
        self._storm: list[int] = []  # set aside for the next summary
        self._storm_since: float | None = None
        self._sent: deque[tuple[float, int]] = deque()  # (when, events) of the last minute

    # -- what the worker asks
    @property
    def pending(self) -> int:
        return len(self._rows)

    @property
    def room(self) -> int:
        return max(0, self.settings.group_buffer - len(self._rows))

    @property
    def storm_pending(self) -> int:
        return len(self._storm)

    def add(self, rows: Sequence[Delivery], now: float) -> None:
        for row in rows:
            self.cursor = max(self.cursor, row.seq)
            if row.seq in self._rows:
                continue
            self._rows[row.seq] = row
            rule = self._rule_of(row.event)
            values: GroupKey = (tuple((f, row.event.field_value(f)) for f in rule.group_by)
                                if rule.group_by is not None else (("seq", row.seq),))
            key: _Key = (rule.route, values)
            self._group_of[row.seq] = key
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(values, rule, opened_at=now)
            elif not group.seqs and (group.flushed_at is None or now >= group.flushed_at
                                     + group.rule.group_interval):
                group.opened_at, group.flushed_at = now, None  # gone quiet: a new group
            group.seqs.append(row.seq)

    def next_due(self, now: float) -> float | None:
        """Seconds until `plan` may have something new to send, or None when nothing held
        will become due by itself. Groups already due but held back (behind an event set
        aside, or another group's event of the same item) do not count: what releases them
        is the summary or that group, whose own time is counted."""
        storm = set(self._storm)
        times = [due for g in self._groups.values()
                 if any(s not in storm for s in g.seqs) and (due := self._due_at(g)) > now]
        if self._storm_since is not None:
            times.append(self._storm_since + self.settings.summary_interval)
        return max(0.0, min(times) - now) if times else None

    def plan(self, now: float, *, flush: bool = False) -> Plan:
        """What to send now. Rows the storm guard sets aside move to the summary pool here;
        a due summary is planned alone, before anything else (it carries older events).
        `flush`: no more events can join (`bridge once` has claimed everything there is), so
        nothing waits: every group and the summary are due now."""
        self._expire(now)
        full = flush or not self.room
        if self._storm and self._storm_since is not None and (
                full or now >= self._storm_since + self.settings.summary_interval):
            return Plan(summary=[self._rows[s] for s in self._storm])
        going = self._going_out(now, force=full)
        cap = self.settings.max_events_per_minute
        engaged = False
        if cap is not None:
            budget = max(0, cap - self.sent_in_window(now))
            going, excess = going[:budget], going[budget:]
            if excess:
                engaged = not self._storm
                self._set_aside(excess, now)
        return Plan(messages=self._messages(going), engaged=engaged)

    def sent_in_window(self, now: float) -> int:
        while self._sent and self._sent[0][0] <= now - STORM_WINDOW:
            self._sent.popleft()
        return sum(n for _, n in self._sent)

    # -- what the worker reports
    def delivered(self, rows: Sequence[Delivery], now: float) -> None:
        """These went out (accepted): forget them and start their groups' interval."""
        for row in rows:
            key = self._group_of.get(row.seq)
            if key is not None and key in self._groups:
                self._groups[key].flushed_at = now
        self.forget(row.seq for row in rows)
        if rows:
            self._sent.append((now, len(rows)))

    def summarised(self) -> list[Delivery]:
        """The summary was accepted: forget its rows; returns them."""
        rows = [self._rows[s] for s in self._storm if s in self._rows]
        self.forget(list(self._storm))
        return rows

    def forget(self, seqs: Iterable[int]) -> None:
        """Rows that left the outbox (acknowledged, summarised or dead-lettered)."""
        gone = set(seqs)
        for seq in gone:
            self._rows.pop(seq, None)
            key = self._group_of.pop(seq, None)
            if key is not None and key in self._groups:
                group = self._groups[key]
                group.seqs = [s for s in group.seqs if s != seq]
        if gone & set(self._storm):
            self._storm = [s for s in self._storm if s not in gone]
            if not self._storm:
                self._storm_since = None

    def spent(self, rows: Sequence[Delivery]) -> None:
        """A failed attempt was counted for these rows in the store: count it here too, so the
        worker's next decision about dead letters sees what the store has."""
        for row in rows:
            if row.seq in self._rows:
                self._rows[row.seq] = row.attempted()

    # -- internals
    @staticmethod
    def _due_at(group: _Group) -> float:
        rule = group.rule
        if rule.group_by is None:
            return group.opened_at  # no grouping: every event is due at once
        if group.flushed_at is None:
            return group.opened_at + rule.group_wait
        return group.flushed_at + rule.group_interval

    def _expire(self, now: float) -> None:
        """Forget empty groups whose interval has passed (without grouping, each event is its
        own group: forgotten as soon as it is empty)."""
        for key in [k for k, g in self._groups.items() if not g.seqs and (
                g.rule.group_by is None or g.flushed_at is None
                or now >= g.flushed_at + g.rule.group_interval)]:
            del self._groups[key]

    def _going_out(self, now: float, *, force: bool) -> list[Delivery]:
        """Rows of due groups, in seq order, none overtaking an earlier event of its item."""
        storm = set(self._storm)
        held: set[str] = set()
        item_message: dict[str, _Key | None] = {}
        going: list[Delivery] = []
        for seq, row in self._rows.items():
            uid = row.event.item_uid
            key = self._group_of[seq]
            group = self._groups[key]
            ready = seq not in storm and uid not in held and (
                force or now >= self._due_at(group))
            # Ungrouped rows all go in one message (the singles, in order per item).
            message = key if group.rule.group_by is not None else None
            if ready and item_message.setdefault(uid, message) != message:
                ready = False  # one message per item per plan: their order is then safe
            if ready:
                going.append(row)
            else:
                held.add(uid)
        return going

    def _set_aside(self, rows: Sequence[Delivery], now: float) -> None:
        if self._storm_since is None:
            self._storm_since = now
        self._storm.extend(r.seq for r in rows)

    def _messages(self, going: Sequence[Delivery]) -> list[Message]:
        by_group: dict[_Key, list[Delivery]] = {}
        for row in going:
            by_group.setdefault(self._group_of[row.seq], []).append(row)
        singles: list[Delivery] = []
        digests: list[Message] = []
        for key, rows in by_group.items():
            rule = self._groups[key].rule
            if len(rows) == 1 or rule.group_by is None:
                singles.extend(rows)
                continue
            for start in range(0, len(rows), rule.max_batch):
                chunk = rows[start:start + rule.max_batch]
                digests.append(Message(chunk, Digest(key[1], tuple(r.event for r in chunk),
                                                     rule.route)))
        return ([Message(singles)] if singles else []) + digests
