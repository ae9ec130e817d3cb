"""The contract every sink keeps, as a test suite any sink runs (Alertmanager's notify/test kit
is the model): subclass the suites that apply and provide a `harness` fixture.

A harness is a real receiver for one sink type (an HTTP server, a TCP listener, a file) plus a
way to read back, by event id, what arrived. The suites then hold every sink to the same
promises, so the outbox worker can rely on them:

- `SinkContract`: a batch arrives whole, each item's events in order, and a secret in the
  sink's config appears in no error, log line or dead letter.
- `UnreachableContract`: a destination that cannot be reached raises
  `DestinationUnavailableError` (an outage spends no attempts), and the sink delivers again
  once it is back.
- `PerEventContract`: for sinks that send one request per event, a failed event holds back
  its item's later events only, the rest is reported through `delivered=`, and a rejection
  is permanent and names the rejected event.
"""

from __future__ import annotations

import asyncio
import io
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import pytest

from bridge.logging import LogConfig, configure_logging
from bridge.model import Event, EventType
from bridge.outbox import SinkWorker
from bridge.sinks.base import (
    DestinationUnavailableError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Sink,
    SinkConfig,
)
from bridge.store.base import SweepCommit, SweepRecord
from bridge.store.sqlite import SQLiteStore
from tests.core._helpers import SCOPE, T0, make_event
from tests.support.waiting import wait_until


class SinkHarness(ABC):
    """One sink type against its real receiver. `secret` is placed in the sink's config (and
    echoed back by receivers that can echo), or None when the sink type has no secret."""

    secret: str | None = None

    @abstractmethod
    def sink(self, **overrides: Any) -> Sink[SinkConfig]:
        """A sink pointed at this harness's receiver; `overrides` are config fields."""

    @abstractmethod
    def arrived(self) -> list[str]:
        """Ids of the events the receiver got so far, in arrival order (duplicates included)."""

    async def settled(self, count: int) -> list[str]:
        """`arrived()` once at least `count` events are in (a stream receiver reads after the
        sender wrote), failing after a deadline."""
        await wait_until(lambda: len(self.arrived()) >= count, 10, f"{count} events arrived")
        return self.arrived()

    async def close(self) -> None:  # noqa: B027 - most harnesses have nothing to stop
        """Stop the receiver."""


class UnreachableHarness(SinkHarness):
    @abstractmethod
    async def go_away(self) -> None:
        """Make the destination unreachable (nothing listening, a path that cannot exist)."""

    @abstractmethod
    async def come_back(self) -> None:
        """Make it reachable again, at the same address."""


class PerEventHarness(SinkHarness):
    @abstractmethod
    def fail(self, event_id: str) -> None:
        """The receiver answers this event with a retryable failure (a 503), every time."""

    @abstractmethod
    def reject(self, event_id: str, *, echo_secret: bool = False) -> None:
        """The receiver refuses this event's content (a 422), quoting the caller's
        credentials in its answer when `echo_secret`, as careless receivers do."""


def items(*chains: int) -> list[Event]:
    """Events of several items, each item's events a new → changed … chain of that length."""
    out: list[Event] = []
    for n, length in enumerate(chains):
        for counter in range(1, length + 1):
            kind = EventType.NEW if counter == 1 else EventType.CHANGED
            out.append(make_event(f"item{n}", type_=kind, counter=counter,
                                  severity="critical" if counter % 2 == 0 else "high"))
    return out


def in_item_order(arrived: Sequence[str], events: Sequence[Event]) -> bool:
    """Every item's events arrived in counter order (first arrivals count)."""
    first = {eid: i for i, eid in reversed(list(enumerate(arrived)))}
    by_item: dict[str, list[Event]] = {}
    for e in events:
        by_item.setdefault(e.item_uid, []).append(e)
    return all(
        [first[e.id] for e in chain] == sorted(first[e.id] for e in chain)
        for chain in by_item.values() if all(e.id in first for e in chain)
    )


async def commit(store: SQLiteStore, events: Sequence[Event], sink: str) -> None:
    await store.commit_sweep(SweepCommit(
        record=SweepRecord(scope=SCOPE, source="so", started_at=T0, finished_at=T0,
                           outcome="complete", events=len(events)),
        deliveries=[(e, [sink]) for e in events]))


class SinkContract:
    """What every sink promises. Subclasses provide the `harness` fixture; `store` is the
    suite-wide real SQLite store (tests/conftest.py)."""

    async def test_a_batch_arrives_whole(self, harness: SinkHarness) -> None:
        events = items(1, 1, 1, 1, 1)
        sink = harness.sink()
        try:
            await sink.send(events)
        finally:
            await sink.close()
        assert sorted(await harness.settled(len(events))) == sorted(e.id for e in events)

    async def test_each_items_events_arrive_in_order(self, harness: SinkHarness) -> None:
        events = items(4, 1, 3, 2)
        sink = harness.sink(batch_size=3)
        try:
            for start in range(0, len(events), 3):  # the worker's batches, in commit order
                await sink.send(events[start:start + 3])
        finally:
            await sink.close()
        arrived = await harness.settled(len(events))
        assert sorted(arrived) == sorted(e.id for e in events)
        assert in_item_order(arrived, events), arrived

    async def test_through_the_outbox_worker_everything_arrives_once(
            self, harness: SinkHarness, store: SQLiteStore) -> None:
        events = items(3, 2, 1, 1)
        sink = harness.sink(batch_size=2)
        await commit(store, events, sink.name)
        worker = SinkWorker(sink, store)
        assert await asyncio.wait_for(worker.drain(), 30) == 0
        arrived = await harness.settled(len(events))
        assert sorted(arrived) == sorted(e.id for e in events)
        assert in_item_order(arrived, events)


class SecretContract:
    """For sinks whose config holds a secret: it never shows in what an operator reads."""

    async def test_a_secret_never_appears_in_errors_logs_or_dead_letters(
            self, harness: PerEventHarness, store: SQLiteStore, log_stream: io.StringIO) -> None:
        """The receiver quotes our credentials in its rejection: the dead letter and the log
        lines (through the real logging chain, redaction included) show `***` instead."""
        assert harness.secret is not None
        configure_logging(LogConfig(format="json"), stream=log_stream)
        events = items(1, 1, 1)
        harness.reject(events[1].id, echo_secret=True)
        sink = harness.sink(max_attempts=1)
        await commit(store, events, sink.name)
        assert await asyncio.wait_for(SinkWorker(sink, store).drain(), 30) == 0
        (dead,) = await store.dead_letters()
        assert dead.event_id == events[1].id
        assert harness.secret not in dead.error and "***" in dead.error, dead.error
        logged = log_stream.getvalue()
        assert "dead_lettered" in logged and "***" in logged
        assert harness.secret not in logged


class UnreachableContract:
    async def test_an_unreachable_destination_is_an_outage_not_a_failure(
            self, harness: UnreachableHarness) -> None:
        await harness.go_away()
        sink = harness.sink()
        events = items(1, 1)
        try:
            with pytest.raises(DestinationUnavailableError) as caught:
                await sink.send(events)
            if harness.secret is not None:
                assert harness.secret not in str(caught.value)
            assert caught.value.delivered == ()
            await harness.come_back()
            await sink.close()  # the worker resets a sink after a failure
            await sink.send(events)
        finally:
            await sink.close()
        assert sorted(await harness.settled(len(events))) == sorted(e.id for e in events)


class PerEventContract:
    async def test_a_failed_event_holds_back_its_item_only(
            self, harness: PerEventHarness) -> None:
        events = items(3, 1, 1)  # item0: #1 #2 #3, then item1, item2
        harness.fail(events[1].id)
        sink = harness.sink()
        try:
            with pytest.raises(RetryableDeliveryError) as caught:
                await sink.send(events)
        finally:
            await sink.close()
        assert not isinstance(caught.value, DestinationUnavailableError)
        expected = {events[0].id, events[3].id, events[4].id}
        assert set(caught.value.delivered) == expected
        assert set(harness.arrived()) == expected  # item0's #3 was not sent

    async def test_a_rejection_is_permanent_and_names_the_event(
            self, harness: PerEventHarness) -> None:
        events = items(1, 1, 1)
        harness.reject(events[2].id)
        sink = harness.sink()
        try:
            with pytest.raises(PermanentDeliveryError) as caught:
                await sink.send(events)
        finally:
            await sink.close()
        assert caught.value.event_ids == (events[2].id,)
        assert sorted(harness.arrived()) == sorted([events[0].id, events[1].id])
