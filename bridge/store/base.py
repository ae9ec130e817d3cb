"""The store contract. Domain logic (diff, routing) never sees SQL; stores never decide what an
event is. One `commit_sweep` call is one transaction: item states, the sweep record, the cursor,
the events and their per-sink outbox rows land together or not at all.

`Store` is what the daemon's flow needs, and every backend fills all of it (the memory and
SQLite stores today; tests/support/store_contract.py holds each to the same promises).
`StoreMaintenance` is what only an operator's commands need from a store that keeps its state in
a file of its own: a copy while running and an integrity check."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec
from pydantic import Field

from bridge.components import StrictModel
from bridge.diff import ItemWrite, State, StoredItem, StoredItems
from bridge.model import Event, check_event_body, events_from_bodies

Outcome = Literal["complete", "incomplete", "skipped", "failed"]
STATES: tuple[str, ...] = get_args(State)


class StoreError(Exception):
    """The state store failed. The two kinds below tell the caller what to do about it; a bare
    `StoreError` is one operation refused for what it asked (a row the schema rejects, an event
    that cannot be encoded, a command this backend does not have): the store itself is fine,
    and the same operation, asked again as it is, fails again."""


class StoreUnavailableError(StoreError):
    """The store cannot serve right now (locked, full, unreachable, not writable, closed) and
    nothing is damaged: back off and try again. A sweep that meets it fails as failed and
    resolves nothing; deliveries wait in the outbox."""


class StoreCorruptError(StoreError):
    """The state cannot be trusted or understood: damaged, not a store at all, or written by a
    newer version than this one. Stop and tell the operator (restore a backup, upgrade):
    retrying cannot help, and writing to it could make it worse."""


class UndecodableDeliveries(Exception):
    """Outbox rows whose stored event cannot be decoded (a damaged file, or an event written by
    an incompatible version): they can never be sent, so the worker dead-letters them."""

    def __init__(self, sink: str, rows: Sequence[tuple[int, str]], error: str) -> None:
        super().__init__(f"{len(rows)} outbox row(s) of {sink} hold an undecodable event: {error}")
        self.rows = tuple(rows)  # (seq, event id)
        self.error = error

    @classmethod
    def check(cls, sink: str, rows: Iterable[tuple[int, str, str]]) -> None:
        """Raise one naming every row (seq, event id, body) whose body does not decode."""
        bad, error = [], ""
        for seq, event_id, body in rows:
            try:
                check_event_body(body)
            except msgspec.MsgspecError as exc:
                bad.append((seq, event_id))
                error = error or f"{type(exc).__name__}: {exc}"
        if bad:
            raise cls(sink, bad, error)


def claimed(sink: str, rows: Iterable[tuple[int, str, str, int]], *,
            decode: bool = True) -> list[Delivery]:
    """A store's claimed outbox rows (seq, event id, body, attempts) as deliveries, every body
    decoded (`decode`) or only checked to decode (`check_event_body`: for a sink that sends the
    stored JSON as it is); raises `UndecodableDeliveries` naming those that fail."""
    rows = list(rows)
    events: Sequence[Event | None]
    try:
        if decode:
            events = events_from_bodies([row[2] for row in rows])
        else:
            check = check_event_body
            for row in rows:
                check(row[2])
            events = [None] * len(rows)
    except msgspec.MsgspecError:
        UndecodableDeliveries.check(sink, [(seq, eid, body) for seq, eid, body, _ in rows])
        raise
    return [Delivery(seq, sink, event_id, body, tries, event)
            for (seq, event_id, body, tries), event in zip(rows, events, strict=True)]


def in_commit_order(writes: Sequence[ItemWrite]) -> Iterator[ItemWrite]:
    """A commit's item writes in the order every store applies them: the full writes (with a
    snapshot: create or replace a row), then the partial ones (a miss counted, an absence
    resolved: only a row that exists by then), so a partial write never meets a row that the
    same commit replaces after it."""
    yield from (w for w in writes if w.snapshot is not None)
    yield from (w for w in writes if w.snapshot is None)


def commit_refused(scope: str, reason: str) -> StoreError:
    """A commit refused for what it holds (a bare StoreError, see there), in the words every
    store uses: a row its schema rejects, or an event that cannot be encoded."""
    return StoreError(f"state commit failed for {scope}: {reason}")


class _SnapshotSeverity(msgspec.Struct):
    severity: Any = ""


# Reads `severity` and only checks the rest of the snapshot to be JSON (`raw`, its bulk, builds
# nothing): 0.5 µs a ~1 KB snapshot against 1.3 µs parsing it whole, once per item write of a
# PostgreSQL commit (100k a first sweep).
_SEVERITY_OF = msgspec.json.Decoder(_SnapshotSeverity)


def snapshot_severity(snapshot: str) -> str:
    """The severity an item was last seen with (what `list_items(severities=…)` filters on);
    "" for a snapshot that is not a JSON object or whose severity is not a string."""
    try:
        value = _SEVERITY_OF.decode(snapshot).severity
    except msgspec.MsgspecError:
        return ""
    return value if isinstance(value, str) else ""


def event_or_none(body: str) -> Event | None:
    """A stored body decoded, or None when it cannot be (what a dead letter shows then)."""
    try:
        return Event.from_json(body)
    except msgspec.MsgspecError:
        return None


@dataclass(frozen=True, slots=True)
class SweepRecord:
    scope: str
    source: str
    started_at: datetime
    finished_at: datetime
    outcome: Outcome
    items_seen: int = 0
    events: int = 0
    requests: int = 0
    notes: tuple[str, ...] = ()
    error: str | None = None
    id: int | None = None


MuteReason = Literal["baseline:summary", "baseline:suppress", "silence"]
MUTE_REASONS: tuple[str, ...] = get_args(MuteReason)


@dataclass(frozen=True, slots=True)
class Muted:
    """An event a sink was not sent, and why: a scope's first-sweep baseline (bridge/baseline.py)
    or a silence (bridge/silences.py, `silence_id`). The audit trail that keeps "not delivered"
    from looking like "never happened"; the event itself is kept in brief (no raw payload)."""

    event_id: str
    type: str
    source: str
    vendor: str
    scope: str
    kind: str
    key: str
    title: str
    severity: str
    occurred_at: datetime
    sink: str
    reason: MuteReason
    silence_id: str | None = None

    @classmethod
    def of(cls, event: Event, sink: str, reason: MuteReason,
           silence_id: str | None = None) -> Muted:
        return cls(event.id, event.type.value, event.source, event.vendor, event.scope,
                   event.kind, event.key, event.title, event.severity, event.occurred_at, sink,
                   reason, silence_id)


# Muted rows are kept this long (those of a silence not yet settled stay until it is).
MUTED_KEPT = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class SilenceRecord:
    """A silence as stored (bridge/silences.py gives it meaning): `matchers` is JSON in the
    routes' matcher syntax. It mutes from `starts_at` until `ends_at` (moved earlier, and
    `expired_at` set, when an operator ends it); `settled_at` once its still-active items were
    delivered as they stand."""

    id: str
    matchers: str
    starts_at: datetime
    ends_at: datetime
    author: str
    reason: str
    origin: str
    created_at: datetime
    expired_at: datetime | None = None
    settled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SinkRef:
    """A sink's own note about one of its keys, kept beside the outbox so that it survives a
    crash and lives in whatever backend the state does: the Jira sink's item (or group) →
    ticket mapping and its create intents (bridge/sinks/jira/). `value` is JSON the sink
    defines; `state` its word for where the key stands ("intent", "open", "accepted"...),
    filterable; `updated_at` when it was last written (an intent's age is judged by it)."""

    sink: str
    key: str
    state: str
    value: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SweepCommit:
    record: SweepRecord
    writes: Sequence[ItemWrite] = ()
    # Each event with the sinks the router chose for it; events routed nowhere are not stored.
    deliveries: Sequence[tuple[Event, Sequence[str]]] = ()
    cursor: dict[str, str] = field(default_factory=dict)
    # Events some sinks were not sent (a baseline, a silence), recorded with why.
    muted: Sequence[Muted] = ()


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One stored item, every column of it: what inspection lists (`bridge state items` formats
    it for display) and what a copy of the state to another store carries."""

    scope: str
    kind: str
    key: str
    state: State
    tracked: str
    counter: int
    misses: int
    first_seen: datetime
    changed_at: datetime  # moves when the state does; counting a miss is not a change
    resolved_at: datetime | None
    snapshot: str

    def stored(self, *, with_snapshot: bool = False) -> StoredItem:
        """What the diff works from (the snapshot only when asked: it is the bulk of a row)."""
        return StoredItem(self.kind, self.key, self.state, self.tracked, self.counter,
                          self.misses, self.first_seen,
                          self.snapshot if with_snapshot else None)


class Delivery:
    """One outbox row of one sink: its event as stored (`body`, JSON), and decoded (`event`):
    by the store's `claim`, or on first use when the claim only checked the body (for a sink
    that sends the stored JSON as it is, `Sink.send_stored`, and never pays for decoding).
    Treated as immutable."""

    __slots__ = ("_event", "attempts", "body", "event_id", "seq", "sink")

    def __init__(self, seq: int, sink: str, event_id: str, body: str, attempts: int,
                 event: Event | None = None) -> None:
        self.seq, self.sink, self.event_id, self.body = seq, sink, event_id, body
        self.attempts = attempts
        self._event = event

    @classmethod
    def of(cls, seq: int, sink: str, event: Event, attempts: int = 0) -> Delivery:
        """A delivery of an event in hand (tests; the outbox makes them from rows)."""
        return cls(seq, sink, event.id, event.to_json(), attempts, event)

    @property
    def event(self) -> Event:
        if self._event is None:
            self._event = events_from_bodies((self.body,))[0]
        return self._event

    def attempted(self) -> Delivery:
        """This delivery after one more attempt."""
        return Delivery(self.seq, self.sink, self.event_id, self.body, self.attempts + 1,
                        self._event)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Delivery) and (
            (self.seq, self.sink, self.event_id, self.body, self.attempts)
            == (other.seq, other.sink, other.event_id, other.body, other.attempts))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Delivery(seq={self.seq}, sink={self.sink!r}, event_id={self.event_id!r}, "
                f"attempts={self.attempts})")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that left a sink's queue without being delivered by itself: refused or out of
    attempts (a dead letter), or carried by a storm summary (`summary` is then that summary's
    id, bridge/grouping.py). Both keep the event whole, so either can be replayed one by one;
    only dead letters are failures."""

    seq: int
    sink: str
    event_id: str
    event: Event | None  # None when the stored body cannot be decoded
    attempts: int
    error: str
    failed_at: datetime
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    sink: str
    depth: int
    oldest_created_at: datetime | None
    dead: int  # dead letters, not counting the summarised events
    summarised: int = 0  # events storm summaries carried (`DeadLetter.summary`)


class Store(ABC):
    """Errors: `StoreUnavailableError` (back off, retry), `StoreCorruptError` (stop), a bare
    `StoreError` for an operation refused for its own input; see their docstrings."""

    @abstractmethod
    async def open(self) -> None:
        """Create or migrate the schema. `StoreCorruptError` when the state cannot be trusted
        or understood (damaged, from a newer version), `StoreUnavailableError` when it cannot
        be reached or written right now."""

    @abstractmethod
    async def close(self) -> None: ...

    # -- sweeps and item state
    @abstractmethod
    async def load_items(self, scope: str, kinds: Collection[str]) -> StoredItems:
        """Every stored item of these kinds in this scope, keyed by (kind, key) (grouped by
        kind inside: see `StoredItems`)."""

    @abstractmethod
    async def load_snapshots(self, scope: str, idents: Collection[tuple[str, str]]
                             ) -> dict[tuple[str, str], str]:
        """Last-seen snapshots (JSON) of these items: what an absence resolution reports."""

    @abstractmethod
    async def load_cursor(self, scope: str) -> dict[str, str]: ...

    @abstractmethod
    async def commit_chunk(self, scope: str, writes: Sequence[ItemWrite],
                           deliveries: Sequence[tuple[Event, Sequence[str]]],
                           muted: Sequence[Muted] = ()) -> None:
        """Part of a large sweep, in its own transaction: item states with their events (and
        the record of those some sinks are not sent).

        Safe because each chunk only creates/changes items together with their outbox rows;
        resolutions, the cursor and the sweep record wait for `commit_sweep`.
        """

    @abstractmethod
    async def commit_sweep(self, commit: SweepCommit) -> int:
        """Write everything in one transaction; returns the sweep id. Keeps the last 1,000
        sweep records of each scope, and muted events for `MUTED_KEPT`."""

    # -- what was not delivered, and why
    @abstractmethod
    async def muted(self, scope: str | None = None, *, silence_id: str | None = None,
                    reason: MuteReason | None = None, limit: int = 100) -> list[Muted]:
        """Muted events, the most recently recorded first; every filter given must hold."""

    @abstractmethod
    async def muted_counts(self, scope: str, reason: MuteReason) -> dict[str, dict[tuple[str, str], int]]:
        """Muted events of a scope for one reason: sink -> (kind, severity) -> count."""

    # -- silences
    @abstractmethod
    async def add_silence(self, silence: SilenceRecord) -> None:
        """Store a new silence; a `StoreError` if its id is taken."""

    @abstractmethod
    async def silences(self, *, unsettled: bool = False) -> list[SilenceRecord]:
        """Silences, the most recently created first; `unsettled`: only those not yet settled
        (every silence that is active, still to come, or ended and awaiting its settlement)."""

    @abstractmethod
    async def expire_silence(self, silence_id: str, at: datetime) -> SilenceRecord | None:
        """End a silence at `at` (unless it ended earlier); None when there is no such id."""

    @abstractmethod
    async def settle_silence(self, silence_id: str, at: datetime,
                             deliveries: Sequence[tuple[Event, Sequence[str]]],
                             muted: Sequence[Muted] = ()) -> bool:
        """In one transaction: the deliveries (and muted rows) for the items an ended silence
        held back, and its `settled_at`. False, writing nothing, when it was settled already
        (or does not exist), so it is settled once."""

    # -- a sink's own references (ticket keys, create intents)
    @abstractmethod
    async def sink_refs(self, sink: str, keys: Collection[str] | None = None, *,
                        state: str | None = None, limit: int = 100) -> list[SinkRef]:
        """A sink's refs in key order: those of `keys` when given, in `state` when given."""

    @abstractmethod
    async def put_sink_refs(self, refs: Sequence[SinkRef], *,
                            silence: SilenceRecord | None = None) -> None:
        """Create or replace these refs, in one transaction with `silence` when given (a
        person's decision a sink learnt of, e.g. a Jira ticket closed as Won't Do, recorded
        with what the sink now knows, or not at all); a `StoreError` if its id is taken."""

    @abstractmethod
    async def delete_sink_refs(self, sink: str, keys: Collection[str]) -> None:
        """Forget these refs of a sink (absent ones are no error)."""

    # -- outbox
    @abstractmethod
    async def claim(self, sink: str, limit: int, after: int = 0, *,
                    decode: bool = True) -> list[Delivery]:
        """The oldest pending deliveries of a sink with `seq > after`, in commit order
        (per-item order preserved). `after` lets a worker fetch the next batch while the
        current one is still being sent. Events are decoded, or with `decode=False` only
        checked (for a sink sending the stored JSON, `claimed`). Raises
        `UndecodableDeliveries` naming the rows of that batch which cannot be decoded."""

    @abstractmethod
    async def ack(self, sink: str, seqs: Sequence[int]) -> None:
        """Delivered: forget them."""

    @abstractmethod
    async def record_failure(self, sink: str, seqs: Sequence[int], error: str) -> None:
        """A retryable failure: count the attempt, keep the rows."""

    @abstractmethod
    async def bury(self, sink: str, seqs: Sequence[int], error: str, *,
                   summary: str | None = None) -> None:
        """Move to dead letters (non-retryable, or out of attempts); with `summary`, record
        them as carried by that storm summary instead (summarised, not failed)."""

    @abstractmethod
    async def dead_letters(self, sink: str | None = None, limit: int = 100, *,
                           summarised: bool | None = None) -> list[DeadLetter]:
        """In seq order; `summarised` True: only what storm summaries carried, False: only
        dead letters, None: both."""

    @abstractmethod
    async def replay(self, sink: str | None = None, seqs: Sequence[int] | None = None, *,
                     summarised: bool | None = False) -> int:
        """Put dead letters back at the end of their sink's queue, attempts reset. `seqs` and
        `summarised` (as for `dead_letters`) choose which; by default the summarised events
        stay: replaying all of them at once would be the flood their summary prevented."""

    @abstractmethod
    async def queue_stats(self) -> list[QueueStats]: ...

    # -- inspection
    @abstractmethod
    async def list_items(self, scope: str | None = None, state: str | None = None,
                         limit: int = 100, *, scopes: Collection[str] | None = None,
                         kinds: Collection[str] | None = None, since: datetime | None = None,
                         severities: Collection[str] | None = None) -> list[ItemRecord]:
        """Stored items, the most recently changed first (ties in scope, kind, key order).
        Every filter given must hold: in `scope` and in `scopes`, of `kinds`, changed at or
        after `since`, last seen with one of `severities`."""

    @abstractmethod
    async def item_counts(self) -> list[tuple[str, str, str, int]]:
        """(scope, kind, state, count) rows for metrics."""

    @abstractmethod
    async def sweeps(self, scope: str | None = None, limit: int = 20, *,
                     outcomes: Collection[str] | None = None) -> list[SweepRecord]:
        """Sweep records, newest first; with `outcomes`, only those."""

    @abstractmethod
    async def swept_scopes(self) -> dict[str, str]:
        """Every scope in the sweep log, with the source of its latest record."""


class StateConfig(StrictModel):
    """The `state:` section of one backend: each backend's module defines its own (with a
    `backend: Literal[...]` tag and its settings) and `bridge.config` puts them in the union."""

    backend: str
    # Back-pressure (bridge/backpressure.py): sweeps pause, nothing dropped, while the outbox
    # holds this many undelivered events (all sinks together; None: unbounded)...
    max_outbox_events: int | None = Field(default=None, ge=1)
    # ...or while the disk holding the state has less free space than this (bytes; 0: off;
    # only backends whose state is a local file, see `disk_path`).
    min_free_disk_bytes: int = Field(default=0, ge=0)

    def build(self) -> Store:
        raise NotImplementedError(f"{type(self).__name__} builds no store")

    def disk_path(self) -> Path | None:
        """A path on the disk the state lives on, for the free-disk floor; None: not local."""
        return None

    def describe(self) -> str:
        """One line for `bridge check-config`: which backend, where."""
        return self.backend


class StoreMaintenance(ABC):
    """Operator commands for a store whose state is a file of its own. Not part of `Store`:
    the daemon's flow needs neither, and a database server has its own tools for both."""

    @abstractmethod
    async def backup(self, dest: Path) -> None:
        """A consistent copy while running, written privately (0600) and atomically."""

    @abstractmethod
    async def check(self) -> list[str]:
        """Integrity problems; empty when sound."""


def maintenance(store: Store) -> StoreMaintenance:
    """`store`'s maintenance commands, or a StoreError saying its backend has none."""
    if isinstance(store, StoreMaintenance):
        return store
    raise StoreError(f"the {type(store).__name__} has no state file to back up or check; "
                     "use the tools of its backend")

