"""The sink contract. A sink moves a batch of events and says, by the exception it raises,
whether a failure is worth retrying; the outbox worker owns backoff and dead letters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from pydantic import Field

from bridge.components import ComponentConfig
from bridge.model import Event


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

    batch_size: int = Field(default=100, ge=1, le=10_000)
    # Attempts the receiver answered with a retryable failure (a 5xx, a 429) before an event is
    # dead-lettered; a destination that cannot be reached at all spends none of them.
    max_attempts: int = Field(default=12, ge=1)
    backoff_initial: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=300.0, gt=0)

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

    async def close(self) -> None:
        """Release connections; must not raise."""
