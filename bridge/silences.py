"""Silences, in Alertmanager's sense, with what its users asked for.

A silence mutes the events its matchers match (the routes' matcher syntax, every matcher must
hold) from `starts_at` until `ends_at`; it always has an end. A muted event is committed as a
`Muted` row naming the silence (who muted what, why, until when), never as a delivery.

Two things Alertmanager users asked for for years:

- `resolved` events of silenced items are still delivered by default
  (`silences.deliver_resolved`): a fix is good news, and without it the receiver keeps an
  incident open that is long gone (prometheus/alertmanager#226);
- when a silence ends, the items it held back that are still active are delivered once, as
  they stand now: one `new` for an item the sinks never heard of (or `reopened`, `changed`),
  not a replay of everything that was muted. That is its settlement, written in one
  transaction with `settled_at`, so it happens once even across restarts.

Silences live in the store, so the command line, the admin API and the daemon share them, and
they survive restarts; the daemon settles ended ones every `silences.check_interval`.
"""

from __future__ import annotations

import getpass
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
import structlog
from pydantic import Field, ValidationError

from bridge.components import StrictModel
from bridge.durations import parse_duration
from bridge.model import Event, EventType, event_id, utcnow
from bridge.routing import Matcher, check_matcher, match_value
from bridge.store.base import Muted, SilenceRecord, Store

log = structlog.get_logger(__name__)

State = Literal["pending", "active", "ended"]
MAX_TEXT = 1000  # reason and author: an audit line, not a document


class SilenceSettings(StrictModel):
    """The `silences:` section."""

    # Deliver `resolved` of a silenced item anyway (Alertmanager #226).
    deliver_resolved: bool = True
    # Seconds between looks for ended silences to settle (their items re-notified).
    check_interval: float = Field(default=15.0, ge=0.1, le=3600)


class SilenceError(ValueError):
    """A silence that cannot be made as asked: the message says why, for a person."""


class UnknownSilence(SilenceError):
    """No silence has that id."""


# `field=value`, `field!=value`, `field=~regex`, `field!~regex`, `severity>=high`, ...
_MATCH = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(=~|!~|!=|>=|<=|>|<|=)\s*(.*?)\s*$",
                    re.DOTALL)
_OPS = {"=": "eq", "!=": "ne", "=~": "regex", "!~": "not_regex", ">=": "gte", ">": "gt",
        "<=": "lte", "<": "lt"}


def parse_matcher(text: str) -> tuple[str, Matcher]:
    """One `--match` argument, e.g. `source=scanorbit` or `attributes.resource_id=~i-0abc.*`."""
    found = _MATCH.match(text)
    if found is None:
        raise SilenceError(f"{text!r}: a matcher is FIELD OP VALUE with OP one of "
                           "= != =~ !~ >= > <= < (e.g. source=scanorbit)")
    name, op, value = found.groups()
    return name, _checked(name, {"op": _OPS[op], "value": value})


def parse_matchers(given: Mapping[str, Any] | Sequence[str]) -> dict[str, Matcher]:
    """Matchers as the admin API takes them: a mapping in the routes' syntax
    (`{"severity": ">= high"}`) or a list of `--match` strings. At least one: a silence that
    matches everything would mute everything."""
    if isinstance(given, str) or not isinstance(given, Mapping | Sequence):
        raise SilenceError("matchers: a mapping of field to matcher, or a list of FIELD OP VALUE")
    pairs = (list(given.items()) if isinstance(given, Mapping)
             else [parse_matcher(str(t)) for t in given])
    out: dict[str, Matcher] = {}
    for name, value in pairs:
        if name in out:
            raise SilenceError(f"{name}: matched twice; one matcher per field")
        out[str(name)] = value if isinstance(value, Matcher) else _checked(str(name), value)
    if not out:
        raise SilenceError("a silence needs at least one matcher (it would mute everything)")
    return out


def _checked(name: str, raw: Any) -> Matcher:
    try:
        matcher = Matcher.model_validate(raw)
        check_matcher(name, matcher)
    except ValidationError as exc:
        raise SilenceError(f"{name}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}"
                           ) from None
    except ValueError as exc:
        raise SilenceError(f"{name}: {exc}") from None
    return matcher


@dataclass(frozen=True)
class Silence:
    """A stored silence with its matchers understood."""

    record: SilenceRecord
    matchers: Mapping[str, Matcher] = field(default_factory=dict)

    @classmethod
    def of(cls, record: SilenceRecord) -> Silence:
        raw = orjson.loads(record.matchers)
        return cls(record, {name: Matcher.model_validate(m) for name, m in raw.items()})

    @property
    def id(self) -> str:
        return self.record.id

    def state(self, now: datetime) -> State:
        if now < self.record.starts_at:
            return "pending"
        return "active" if now < self.record.ends_at else "ended"

    def matches(self, event: Event) -> bool:
        return all(match_value(m, name, event.field_value(name))
                   for name, m in self.matchers.items())

    def describe(self) -> list[str]:
        """The matchers as a person reads them: `source eq 'scanorbit'`."""
        return [f"{name} {m.op} {m.value!r}" for name, m in self.matchers.items()]

    def to_dict(self, now: datetime) -> dict[str, Any]:
        r = self.record
        return {
            "id": r.id, "state": self.state(now),
            "matchers": {name: {"op": m.op, "value": m.value} for name, m in self.matchers.items()},
            "starts_at": r.starts_at.isoformat(), "ends_at": r.ends_at.isoformat(),
            "author": r.author, "reason": r.reason, "origin": r.origin,
            "created_at": r.created_at.isoformat(),
            "expired_at": r.expired_at.isoformat() if r.expired_at else None,
            "settled_at": r.settled_at.isoformat() if r.settled_at else None,
        }


def new_silence(matchers: Mapping[str, Matcher], *, reason: str, author: str,
                duration: str | None = None, ends_at: datetime | None = None,
                starts_at: datetime | None = None, origin: str = "cli",
                now: datetime | None = None) -> SilenceRecord:
    """A silence to store: an end is required (`duration` such as "7d", or `ends_at`)."""
    now = now or utcnow()
    start = starts_at or now
    if (duration is None) == (ends_at is None):
        raise SilenceError("a silence needs an end: give a duration (e.g. 7d) or an end time, "
                           "not both")
    try:
        end = start + parse_duration(duration) if duration is not None else ends_at
    except ValueError as exc:
        raise SilenceError(f"duration: {exc}") from None
    assert end is not None
    if end <= now or end <= start:
        raise SilenceError("the silence would end before it starts (or already has)")
    reason, author = reason.strip(), author.strip()
    if not reason:
        raise SilenceError("a silence needs a reason: the audit trail says why")
    if not author:
        raise SilenceError("a silence needs an author: the audit trail says who")
    if len(reason) > MAX_TEXT or len(author) > MAX_TEXT:
        raise SilenceError(f"reason and author are at most {MAX_TEXT} characters")
    data = {name: {"op": m.op, "value": m.value} for name, m in matchers.items()}
    return SilenceRecord(secrets.token_hex(6), orjson.dumps(data).decode(), start, end, author,
                         reason, origin, now)


def default_author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return "unknown"


# -- muting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Muting:
    """The silences one sweep (or settlement) applies, and the policy for `resolved`."""

    silences: Sequence[Silence] = ()
    deliver_resolved: bool = True

    def silencing(self, event: Event, now: datetime) -> Silence | None:
        """The silence that mutes `event` at `now`, if any (the oldest of them)."""
        if event.type is EventType.RESOLVED and self.deliver_resolved:
            return None
        if event.type is EventType.SUMMARY:
            return None  # a baseline's summary is about the scope, not an item
        for silence in reversed(self.silences):  # stored newest first
            if silence.state(now) == "active" and silence.matches(event):
                return silence
        return None


async def load_muting(store: Store, settings: SilenceSettings) -> Muting:
    return Muting(tuple(Silence.of(r) for r in await store.silences(unsettled=True)),
                  settings.deliver_resolved)


# -- settlement ---------------------------------------------------------------------------

Route = Callable[[Event], tuple[str, ...]]  # the sinks the current routes choose


def _renotified_type(types: Iterable[str]) -> EventType:
    """What the sinks missed, told as one event: `new` if they never heard of the item,
    `reopened` if they last heard it resolved, else `changed`."""
    seen = set(types)
    if EventType.NEW.value in seen:
        return EventType.NEW
    return EventType.REOPENED if EventType.REOPENED.value in seen else EventType.CHANGED


async def renotifications(store: Store, silence: Silence, now: datetime
                          ) -> list[Event]:
    """The events that tell the sinks what `silence` held back: one per item it muted that is
    still active, as the item stands now."""
    muted = await store.muted(silence_id=silence.id, limit=-1)
    items: dict[tuple[str, str, str], list[Muted]] = {}
    for m in reversed(muted):  # oldest first
        items.setdefault((m.scope, m.kind, m.key), []).append(m)
    events: list[Event] = []
    for scope in sorted({scope for scope, _, _ in items}):
        idents = [(kind, key) for s, kind, key in items if s == scope]
        stored = await store.load_items(scope, sorted({kind for kind, _ in idents}))
        snapshots = await store.load_snapshots(scope, idents)
        for kind, key in idents:
            current = stored.get((kind, key))
            if current is None or current.state != "active":
                continue  # resolved meanwhile (and told so), or forgotten
            rows = items[(scope, kind, key)]
            item = current.as_item(snapshots.get((kind, key)))
            type_ = _renotified_type(m.type for m in rows)
            events.append(Event(
                id=event_id(scope, kind, key, type_, current.counter), type=type_,
                source=rows[-1].source, vendor=rows[-1].vendor, scope=scope, tenant=item.tenant,
                kind=kind, key=key, title=item.title, severity=item.severity,
                vendor_severity=item.vendor_severity, status=item.status,
                reason=f"silence {silence.id} ended: {len(rows)} event(s) were held back",
                counter=current.counter, occurred_at=now, attributes=item.attributes,
                raw=item.raw))
    return events


@dataclass(frozen=True)
class Settlement:
    """What settling an ended silence sends, and what other silences still hold back."""

    silence: Silence
    deliveries: Sequence[tuple[Event, tuple[str, ...]]]
    muted: Sequence[Muted]


async def settlement(store: Store, silence: Silence, route: Route, muting: Muting,
                     now: datetime) -> Settlement:
    """The re-notifications of an ended silence, routed as now (other silences still apply);
    nothing is written."""
    deliveries: list[tuple[Event, tuple[str, ...]]] = []
    muted: list[Muted] = []
    for event in await renotifications(store, silence, now):
        sinks = route(event)
        other = muting.silencing(event, now)
        if other is not None and other.id != silence.id:
            muted += [Muted.of(event, sink, "silence", other.id) for sink in sinks]
            sinks = ()
        deliveries.append((event, sinks))
    return Settlement(silence, deliveries, muted)


async def settle(store: Store, silence: Silence, route: Route, muting: Muting,
                 now: datetime) -> int | None:
    """Deliver what an ended silence held back and mark it settled, in one transaction. The
    number of events, or None when another run settled it first."""
    plan = await settlement(store, silence, route, muting, now)
    if not await store.settle_silence(silence.id, now, plan.deliveries, plan.muted):
        return None
    log.info("silence_settled", silence=silence.id, renotified=len(plan.deliveries),
             still_silenced=len({m.event_id for m in plan.muted}))
    return len(plan.deliveries)


# -- the operations the command line and the admin API share --------------------------------


class SilenceService:
    """Add, list and expire silences in the store; `changed()` is called after each change
    (the daemon then settles an expired silence at once instead of at its next look)."""

    def __init__(self, store: Store, changed: Callable[[], None] | None = None) -> None:
        self.store = store
        self._changed = changed

    async def add(self, record: SilenceRecord) -> Silence:
        await self.store.add_silence(record)
        silence = Silence.of(record)
        log.info("silence_added", silence=record.id, matchers=silence.describe(),
                 ends_at=record.ends_at.isoformat(), author=record.author, reason=record.reason,
                 origin=record.origin)
        self._notify()
        return silence

    async def list(self, *, ended: bool = False) -> list[Silence]:
        now = utcnow()
        found = [Silence.of(r) for r in await self.store.silences()]
        return found if ended else [s for s in found if s.state(now) != "ended"]

    async def expire(self, silence_id: str) -> Silence:
        record = await self.store.expire_silence(silence_id, utcnow())
        if record is None:
            raise UnknownSilence(f"no silence with id {silence_id!r}")
        log.info("silence_expired", silence=silence_id, ends_at=record.ends_at.isoformat())
        self._notify()
        return Silence.of(record)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed()

