"""The sink contract. A sink moves a batch of events and says, by the exception it raises,
whether a failure is worth retrying; the outbox worker owns backoff and dead letters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import Field

from bridge.baseline import Baseline
from bridge.components import ComponentConfig
from bridge.model import Event, events_from_bodies


class DeliveryError(Exception):
    """Base of delivery failures. Messages must never contain secrets."""


class RetryableDeliveryError(DeliveryError):
    """The receiver is down, slow or throttling: try the same batch again later.

    `delivered` names events of the batch the receiver did accept before the failure: they are
    acknowledged and not sent again (a retry then duplicates nothing that already arrived).
    """

    def __init__(self, message: str, retry_after: float | None = None,
                 delivered: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.delivered = tuple(delivered)


class DestinationUnavailableError(RetryableDeliveryError):
    """The destination cannot be reached or written at all: connection refused or lost, TLS
    handshake failed, disk full. Nothing about the events is at fault, so the attempt does not
    count towards `max_attempts`: an outage, however long, fills the outbox, not the dead
    letters."""


class ThrottledError(RetryableDeliveryError):
    """The receiver said *later*, not *no*: a 429, a 503 with `Retry-After`, a 408. It judged
    neither the content nor its own health, so, like an outage, the attempt does not count
    towards `max_attempts`: a long throttle fills the outbox, never the dead letters."""


class PermanentDeliveryError(DeliveryError):
    """The receiver rejected the content: retrying cannot help, dead-letter it.

    `event_ids` names the rejected events when the sink knows; otherwise the worker isolates
    the culprit by resending the batch one event at a time.
    """

    def __init__(self, message: str, event_ids: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.event_ids = tuple(event_ids) if event_ids is not None else None


class SinkConfig(ComponentConfig):
    """Delivery policy every sink shares; subclasses add `type` and their own settings."""

    # What this kind of sink gets of a scope's first sweep unless a source or route says
    # otherwise (bridge/baseline.py): ticketing and chat sinks declare "summary", so that a
    # fresh install does not open ten thousand tickets; a SIEM or an archive wants everything.
    default_baseline: ClassVar[Baseline] = "deliver"

    batch_size: int = Field(default=100, ge=1, le=10_000)
    # Attempts the receiver answered with a failure (a 5xx, a timeout) before an event is
    # dead-lettered. Throttling (429, 503 + Retry-After) and a destination that cannot be
    # reached spend none: they fill the outbox, never the dead letters.
    max_attempts: int = Field(default=12, ge=1)
    # false: failures spend no attempts either; only rejections of the content dead-letter.
    count_failures: bool = True
    backoff_initial: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=300.0, gt=0)
    # The longest wait between tries of an unreachable destination: a cheap probe, so delivery
    # resumes within this long of its return, whatever backoff came before.
    probe_interval: float = Field(default=15.0, gt=0)

    def build(self) -> Sink[Any]:
        raise NotImplementedError(f"{type(self).__name__} does not build a sink")


C = TypeVar("C", bound=SinkConfig)


class Sink(ABC, Generic[C]):
    """One configured destination. `send` is called by exactly one worker at a time."""

    def __init__(self, config: C) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    async def open(self) -> None:
        """Acquire connections; failures here are retried like a failed send."""

    @abstractmethod
    async def send(self, events: Sequence[Event]) -> None:
        """Deliver every event or raise. Returning means all bytes reached the receiver."""

    # A sink whose messages are the events' JSON as the outbox stores it (`Event.to_json`), and
    # nothing else of them, says so: its worker then hands it the stored bodies (`send_stored`)
    # instead of decoding each into an `Event` only for the sink to encode it back (a first
    # sweep's 100,000 events cost a JSON-lines file ~1 s of decoding). Routes that group its
    # events, or its storm guard, still need the events: the worker decides.
    sends_stored_json: bool = False

    async def send_stored(self, bodies: Sequence[str]) -> None:
        """Deliver these `Event.to_json` texts, as `send` would deliver their events."""
        await self.send(events_from_bodies(bodies))

    async def close(self) -> None:
        """Release connections; must not raise."""
