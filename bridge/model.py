"""The normalized vocabulary every component speaks: items seen upstream, events sent downstream.

Sources produce `Item`s grouped in a `Sweep`; the diff turns a sweep plus stored state into
`Event`s; sinks only ever see `Event`s. Keeping these plain, frozen dataclasses (not pydantic
models) keeps the hot path of a 100k-item sweep cheap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, cast, get_type_hints

import msgspec
import orjson

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK: Mapping[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}
# CEF's 0-10 scale: Low 0-3, Medium 4-6, High 7-8, Very-High 9-10.
SEVERITY_SCORE: Mapping[str, int] = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}

JSONScalar = str | int | float | bool | None


class EventType(StrEnum):
    NEW = "new"
    CHANGED = "changed"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    # Not a transition of one item: the first sweep of a scope told in one event per sink
    # (`baseline: summary`, bridge/baseline.py), counts by kind and severity in `attributes`.
    SUMMARY = "summary"


_SEVERITY_ALIASES: Mapping[str, Severity] = {
    "informational": "info",
    "information": "info",
    "trivial": "info",
    "none": "info",
    "moderate": "medium",
    "med": "medium",
    "important": "high",
    "severe": "critical",
    "urgent": "critical",
}
_severity_cache: dict[tuple[str, str], Severity] = {}


def json_scalar(value: Any) -> JSONScalar:
    """A vendor value as an attribute: scalars as they are, anything else as compact JSON text.

    Attributes are flat by contract (SIEM fields, routing matches), and stored events are
    decoded with that type checked, so no source may let a list or an object through.
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS).decode()


def normalize_severity(raw: object, default: Severity = "medium") -> Severity:
    """Map a vendor's severity word onto ours; unknown words keep the default, never fail."""
    if not isinstance(raw, str):
        return default
    cached = _severity_cache.get((raw, default))
    if cached is not None:
        return cached
    word = raw.strip().lower()
    result = cast(Severity, word) if word in SEVERITY_RANK else _SEVERITY_ALIASES.get(word, default)
    if len(_severity_cache) < 1024:  # vendors use a handful of words; never grow unbounded
        _severity_cache[(raw, default)] = result
    return result


@dataclass(slots=True)
class Item:
    """One thing a vendor reports, normalized. `key` is stable across polls within (scope, kind).

    Treated as immutable; not `frozen` only because frozen dataclasses cost several times more
    to construct, and a 100k-finding sweep builds 100k of them.
    """

    kind: str
    key: str
    title: str
    severity: Severity
    active: bool
    vendor_severity: str = ""
    status: str = ""
    tenant: str = ""
    # Why the vendor considers the item inactive (e.g. "vendor status resolved"); "" when active.
    resolution: str = ""
    # False when the vendor listed the item without a verdict (a skipped test): it is then
    # neither created, changed nor resolved, and its presence is not a miss.
    judged: bool = True
    # Small, flat, SIEM-friendly facts (account, resource, framework, user...).
    attributes: Mapping[str, JSONScalar] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    def tracked_value(self, name: str) -> JSONScalar:
        """A value whose change makes a `changed` event; `attributes.x` reaches into attributes."""
        if name.startswith("attributes."):
            return self.attributes.get(name[len("attributes.") :])
        value = getattr(self, name, None)
        return value if isinstance(value, str | int | float | bool) or value is None else str(value)

    def tracked(self, fields: tuple[str, ...]) -> dict[str, JSONScalar]:
        return {name: self.tracked_value(name) for name in fields}


@dataclass(frozen=True, slots=True)
class Sweep:
    """What one poll of one scope saw.

    `kinds` maps each item kind this sweep speaks for to whether that part was complete
    (every page fetched, totals consistent, no error). Stored items of kinds not listed are
    left alone; absence only counts against kinds marked complete.
    """

    scope: str
    items: tuple[Item, ...]
    kinds: Mapping[str, bool]
    # Source progress (e.g. last scan id swept), committed in the sweep's transaction.
    cursor: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return all(self.kinds.values())

    @property
    def skipped(self) -> bool:
        """Nothing was swept (e.g. no new upstream scan): a cheap cycle."""
        return not self.kinds


def event_id(scope: str, kind: str, key: str, transition: EventType, counter: int) -> str:
    """Deterministic id: a replayed sweep or redelivery yields the same id, so sinks can dedupe."""
    material = "\x1f".join((scope, kind, key, transition.value, str(counter)))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def item_uid(scope: str, kind: str, key: str) -> str:
    """Stable short id for an item across its whole life (Jira labels, PagerDuty dedup keys)."""
    # `surrogatepass`: the same bytes as UTF-8 for any valid text; an unpaired surrogate (no
    # JSON decoder lets one through, but an event is made before any encoding) still hashes,
    # and the encoders that meet it refuse the event, not its construction.
    material = "\x1f".join((scope, kind, key)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(material).hexdigest()[:20]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Event:
    """A transition of one item, as delivered to sinks. Treated as immutable (see `Item`)."""

    id: str
    type: EventType
    source: str
    vendor: str
    scope: str
    kind: str
    key: str
    title: str
    severity: Severity
    occurred_at: datetime
    counter: int
    vendor_severity: str = ""
    status: str = ""
    tenant: str = ""
    reason: str = ""
    # For `changed`: field -> [old, new].
    changes: Mapping[str, tuple[JSONScalar, JSONScalar]] = field(default_factory=dict)
    attributes: Mapping[str, JSONScalar] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)
    # The JSON this event was decoded from (its outbox row's body, `events_from_bodies`):
    # `to_json` returns it instead of encoding the event a second time. Not an init field, so
    # `dataclasses.replace` (a changed copy) never carries a stale one along.
    encoded: str | None = field(default=None, init=False, repr=False, compare=False)
    # `item_uid(scope, kind, key)`, hashed once: when the event is made, or read back from
    # the JSON it was decoded from (`to_dict` writes it), never again per sink or encoding.
    item_uid: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.item_uid:
            self.item_uid = item_uid(self.scope, self.kind, self.key)

    @property
    def severity_score(self) -> int:
        return SEVERITY_SCORE[self.severity]

    def field_value(self, name: str) -> JSONScalar:
        """Look a field up by the name routes and templates use (`type`, `attributes.region`...)."""
        if name.startswith("attributes."):
            return self.attributes.get(name[len("attributes.") :])
        if name == "type":
            return self.type.value
        value = getattr(self, name, None)
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, str | int | float | bool) or value is None:
            return value
        return None

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape: what the outbox stores and the JSON formats emit.

        Once per event of every sweep (100k a first sweep), hence `_value_` (a plain attribute;
        `value` is a property of `Enum`), the score looked up here, and no copy of empty
        changes."""
        changes = self.changes
        return {
            "id": self.id,
            "type": self.type._value_,
            "source": self.source,
            "vendor": self.vendor,
            "scope": self.scope,
            "tenant": self.tenant,
            "kind": self.kind,
            "key": self.key,
            "item_uid": self.item_uid,
            "title": self.title,
            "severity": self.severity,
            "severity_score": SEVERITY_SCORE[self.severity],
            "vendor_severity": self.vendor_severity,
            "status": self.status,
            "reason": self.reason,
            "counter": self.counter,
            "occurred_at": _isoformat(self.occurred_at),
            "changes": {k: list(v) for k, v in changes.items()} if changes else {},
            "attributes": self.attributes,
            "raw": self.raw,
        }

    def to_json(self) -> str:
        """`to_dict` as compact JSON: encoded once per event on its way to the outbox, and
        what a sink reads back (`encoded`) rather than encoding it again."""
        if self.encoded is not None:
            return self.encoded
        return orjson.dumps(self.to_dict(), default=str).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        return _EVENT_DECODER.decode(text)


# Straight from JSON into `Event`s, typed and checked: about twice as fast as parsing into dicts
# and building the dataclass from them, which mattered on the outbox's delivery path. Of the
# derived fields of `to_dict`, `item_uid` is kept (not hashed again), `severity_score` ignored.
_EVENT_DECODER = msgspec.json.Decoder(Event)


def _checked_shape() -> msgspec.json.Decoder[Any]:
    """A decoder of `Event` JSON that builds nothing of `raw` (kept as raw JSON, checked to be
    JSON): what `check_event_body` reads. Derived from `Event` itself, so the two cannot drift."""
    hints = get_type_hints(Event)
    required: list[tuple[str, Any]] = []
    optional: list[tuple[str, Any, Any]] = []
    for f in fields(Event):
        if f.name == "encoded":  # ours, never in the JSON
            continue
        kind = msgspec.Raw if f.name == "raw" else hints[f.name]
        if f.default is not MISSING:
            optional.append((f.name, kind, f.default))
        elif f.default_factory is not MISSING:
            default = msgspec.Raw(b"{}") if f.name == "raw" else msgspec.field(
                default_factory=f.default_factory)
            optional.append((f.name, kind, default))
        else:
            required.append((f.name, kind))
    return msgspec.json.Decoder(msgspec.defstruct("CheckedEvent", [*required, *optional]))


_EVENT_CHECK = _checked_shape()


def check_event_body(body: str) -> str:
    """`body`'s event id, once `body` is known to decode into an `Event`; raises
    `msgspec.MsgspecError` (as `Event.from_json` would) if it does not.

    What an outbox claim does with every body, rather than decode it: a sink that sends the
    stored JSON as it is (a JSON-lines file) never needs the event, and the check costs ~40% of
    the decoding (`raw`, the bulk of an event, is only checked to be a JSON object)."""
    shape = _EVENT_CHECK.decode(body)
    if not bytes(shape.raw).startswith(b"{"):
        raise msgspec.ValidationError("Expected `object`, got another JSON value - at `$.raw`")
    event_id: str = shape.id
    return event_id


def events_from_bodies(bodies: Sequence[str]) -> list[Event]:
    """Each `Event.to_json` text decoded, and kept as the event's `encoded` form: the bytes
    of the outbox row are the bytes a JSON sink sends. Raises `msgspec.MsgspecError` for a
    body that does not decode."""
    decode = _EVENT_DECODER.decode
    events = []
    for body in bodies:
        event = decode(body)
        event.encoded = body
        events.append(event)
    return events


# The events of one sweep share one `occurred_at` (the sweep's start): its ISO text is made
# once, not once per event.
_last_iso: tuple[datetime, str] = (datetime.min, datetime.min.isoformat())


def _isoformat(moment: datetime) -> str:
    global _last_iso
    last, text = _last_iso
    if moment is last:
        return text
    text = moment.isoformat()
    _last_iso = (moment, text)
    return text
