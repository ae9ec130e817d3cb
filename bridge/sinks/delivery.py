"""Per-item ordered delivery, for every sink that sends one request per event (webhooks, chat,
PagerDuty, Jira).

Items go concurrently, but one item's events go one after another and stop at the first
retryable failure: a `resolved` must never reach a receiver before its `new`. What the receiver
accepted is reported through `RetryableDeliveryError.delivered`, so the worker acknowledges it
and a retry resends only what did not arrive. The sink supplies `deliver_one` (one event, one
request, raising the sink error types); everything about order and aggregation lives here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from bridge.model import Event
from bridge.sinks.base import (
    DestinationUnavailableError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    ThrottledError,
)

DeliverOne = Callable[[Event], Awaitable[None]]


async def deliver_per_item(events: Sequence[Event], deliver_one: DeliverOne, *,
                           concurrency: int) -> None:
    """Deliver every event or raise one error that describes the batch.

    At most `concurrency` items are in flight at once. A permanent rejection dead-letters that
    event only (the item's later events still go); a retryable failure holds back the rest of
    its item. An unexpected exception from `deliver_one` (a bug) is re-raised as it is.
    """
    chains: dict[str, list[Event]] = {}
    for e in events:
        chains.setdefault(e.item_uid, []).append(e)
    outcome: dict[str, Exception | None] = {}
    slots = asyncio.Semaphore(concurrency)

    async def in_order(chain: list[Event]) -> None:
        async with slots:
            for i, e in enumerate(chain):
                try:
                    await deliver_one(e)
                    outcome[e.id] = None
                except PermanentDeliveryError as exc:
                    outcome[e.id] = exc  # dead-lettered; the item's later events may follow
                except Exception as exc:
                    outcome[e.id] = exc
                    held = type(exc) if isinstance(exc, RetryableDeliveryError) \
                        else RetryableDeliveryError
                    for later in chain[i + 1:]:
                        outcome[later.id] = held("not sent: an earlier event of the same item "
                                                 "failed")
                    return

    await asyncio.gather(*(in_order(c) for c in chains.values()))
    results = [outcome[e.id] for e in events]
    bugs = [r for r in results if r is not None
            and not isinstance(r, RetryableDeliveryError | PermanentDeliveryError)]
    if bugs:
        raise bugs[0]
    retryable = [r for r in results if isinstance(r, RetryableDeliveryError)]
    if retryable:
        waits = [r.retry_after for r in retryable if r.retry_after is not None]
        raise _worst(retryable)(
            f"{len(retryable)} of {len(events)} deliveries failed: {retryable[0]}",
            retry_after=max(waits) if waits else None,
            delivered=[e.id for e in events if outcome[e.id] is None],
        )
    rejected = [(e, r) for e, r in zip(events, results, strict=True)
                if isinstance(r, PermanentDeliveryError)]
    if rejected:
        raise PermanentDeliveryError(str(rejected[0][1]), event_ids=[e.id for e, _ in rejected])


def _worst(errors: Sequence[RetryableDeliveryError]) -> type[RetryableDeliveryError]:
    """The class that describes a batch: an attempt is spent only if some failure was one that
    counts (see `bridge.sinks.base`), so the batch is as 'innocent' as its guiltiest event."""
    if all(isinstance(e, DestinationUnavailableError) for e in errors):
        return DestinationUnavailableError
    if all(isinstance(e, DestinationUnavailableError | ThrottledError) for e in errors):
        return ThrottledError
    return RetryableDeliveryError
