"""The store contract. Domain logic (diff, routing) never sees SQL; stores never decide what an
event is. One `commit_sweep` call is one transaction: item states, the sweep record, the cursor,
the events and their per-sink outbox rows land together or not at all."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from bridge.diff import ItemWrite, StoredItem
from bridge.model import Event

Outcome = Literal["complete", "incomplete", "skipped", "failed"]


class StoreError(Exception):
    """The state cannot be used (unreadable, corrupt, from a newer version). Not retryable."""


class UndecodableDeliveries(Exception):
    """Outbox rows whose stored event cannot be decoded (a damaged file, or an event written by
    an incompatible version): they can never be sent, so the worker dead-letters them."""

    def __init__(self, sink: str, rows: Sequence[tuple[int, str]], error: str) -> None:
        super().__init__(f"{len(rows)} outbox row(s) of {sink} hold an undecodable event: {error}")
        self.rows = tuple(rows)  # (seq, event id)
        self.error = error


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


@dataclass(frozen=True, slots=True)
class SweepCommit:
    record: SweepRecord
    writes: Sequence[ItemWrite] = ()
    # Each event with the sinks the router chose for it; events routed nowhere are not stored.
    deliveries: Sequence[tuple[Event, Sequence[str]]] = ()
    cursor: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int
    sink: str
    event: Event
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    seq: int
    sink: str
    event_id: str
    event: Event | None  # None when the stored body cannot be decoded
    attempts: int
    error: str
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class QueueStats:
    sink: str
    depth: int
    oldest_created_at: datetime | None
    dead: int


class Store(ABC):
    @abstractmethod
    async def open(self) -> None:
        """Create or migrate the schema; raise StoreError when the state cannot be used."""

    @abstractmethod
    async def close(self) -> None: ...

    # -- sweeps and item state
    @abstractmethod
    async def load_items(self, scope: str, kinds: Collection[str]) -> dict[tuple[str, str], StoredItem]:
        """Every stored item of these kinds in this scope, keyed by (kind, key)."""

    @abstractmethod
    async def load_snapshots(self, scope: str, idents: Collection[tuple[str, str]]
                             ) -> dict[tuple[str, str], str]:
        """Last-seen snapshots (JSON) of these items: what an absence resolution reports."""

    @abstractmethod
    async def load_cursor(self, scope: str) -> dict[str, str]: ...

    @abstractmethod
    async def commit_chunk(self, scope: str, writes: Sequence[ItemWrite],
                           deliveries: Sequence[tuple[Event, Sequence[str]]]) -> None:
        """Part of a large sweep, in its own transaction: item states with their events.

        Safe because each chunk only creates/changes items together with their outbox rows;
        resolutions, the cursor and the sweep record wait for `commit_sweep`.
        """

    @abstractmethod
    async def commit_sweep(self, commit: SweepCommit) -> int:
        """Write everything in one transaction; returns the sweep id."""

    # -- outbox
    @abstractmethod
    async def claim(self, sink: str, limit: int, after: int = 0) -> list[Delivery]:
        """The oldest pending deliveries of a sink with `seq > after`, in commit order
        (per-item order preserved). `after` lets a worker fetch the next batch while the
        current one is still being sent. Raises `UndecodableDeliveries` naming the rows of
        that batch which cannot be decoded."""

    @abstractmethod
    async def ack(self, sink: str, seqs: Sequence[int]) -> None:
        """Delivered: forget them."""

    @abstractmethod
    async def record_failure(self, sink: str, seqs: Sequence[int], error: str) -> None:
        """A retryable failure: count the attempt, keep the rows."""

    @abstractmethod
    async def bury(self, sink: str, seqs: Sequence[int], error: str) -> None:
        """Move to dead letters (non-retryable, or out of attempts)."""

    @abstractmethod
    async def dead_letters(self, sink: str | None = None, limit: int = 100) -> list[DeadLetter]: ...

    @abstractmethod
    async def replay(self, sink: str | None = None, seqs: Sequence[int] | None = None) -> int:
        """Put dead letters back at the end of their sink's queue, attempts reset."""

    @abstractmethod
    async def queue_stats(self) -> list[QueueStats]: ...

    # -- inspection
    @abstractmethod
    async def items(self, scope: str | None = None, state: str | None = None,
                    limit: int = 100) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def item_counts(self) -> list[tuple[str, str, str, int]]:
        """(scope, kind, state, count) rows for metrics."""

    @abstractmethod
    async def sweeps(self, scope: str | None = None, limit: int = 20) -> list[SweepRecord]: ...

    @abstractmethod
    async def backup(self, dest: Path) -> None:
        """A consistent copy while running."""

    @abstractmethod
    async def check(self) -> list[str]:
        """Integrity problems; empty when sound."""
