"""Digests and the storm guard through the real sink worker, a real SQLite outbox and real
receivers: events wait for company and go out together, a restart neither loses nor re-sends
a digest's events, and a 5,000-item first sweep reaches Slack as a handful of messages."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from bridge.grouping import Digest
from bridge.logging import LogConfig, configure_logging
from bridge.model import Event
from bridge.outbox import SinkWorker
from bridge.sinks.http.sink import HttpSink
from bridge.sinks.slack import SlackSinkConfig
from bridge.sinks.webhook import WebhookSinkConfig
from bridge.store.sqlite import SQLiteStore
from tests.core._helpers import make_event
from tests.support.receiver import Receiver
from tests.support.service_receivers import Answer, SlackReceiver
from tests.support.sink_contract import commit
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)


def hook(rx: Receiver, **settings: Any) -> HttpSink:
    return WebhookSinkConfig.model_validate({
        "type": "webhook", "name": "hook", "url": rx.url, "timeout": 5,
        "backoff_initial": 0.001, "backoff_max": 0.01, **settings}).build()


async def depth(store: SQLiteStore, sink: str = "hook") -> int:
    return {s.sink: s.depth for s in await store.queue_stats()}.get(sink, 0)


def metric(name: str, sink: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"sink": sink, **labels}) or 0.0


async def test_events_wait_for_company_then_go_as_digests_and_a_lone_one_as_itself(
        store: SQLiteStore, receiver: Receiver) -> None:
    events = [make_event("h1", severity="high"), make_event("l1", severity="low"),
              make_event("h2", severity="high"), make_event("c1", severity="critical"),
              make_event("l2", severity="low"), make_event("h3", severity="high")]
    await commit(store, events, "hook")
    before = metric("bridge_digests_total", "hook")
    worker = SinkWorker(hook(receiver, group_by=["severity"], group_wait=0.2), store)
    assert await asyncio.wait_for(worker.drain(), 20) == 0
    by_id = {r.id: r.body for r in receiver.received}
    digests = {b["group"]["severity"]: [e["key"] for e in b["events"]]
               for i, b in by_id.items() if i.startswith("dg-")}
    assert digests == {"high": ["h1", "h2", "h3"], "low": ["l1", "l2"]}
    assert by_id[events[3].id]["key"] == "c1"  # alone: sent as itself
    assert len(receiver.received) == 3 and worker.delivered == 6
    assert await depth(store) == 0 and await store.dead_letters() == []
    assert metric("bridge_digests_total", "hook") - before == 2


class AckRefusingStore(SQLiteStore):
    """A real store that cannot record acknowledgements (a full disk): the receiver's answer
    is in, the store cannot write it."""

    async def ack(self, sink: str, seqs: Any) -> None:
        raise OSError(28, "No space left on device")


async def test_a_restart_mid_digest_neither_loses_nor_resends(
        tmp_path: Path, receiver: Receiver) -> None:
    path = tmp_path / "bridge.db"
    store = SQLiteStore(path)
    await store.open()
    events = [make_event(f"k{i}") for i in range(5)]
    await commit(store, events, "hook")
    # 1. A worker claims the rows and waits for company (group_wait 30 s): it stops (a
    #    restart) before the group is due. Nothing was sent; everything is still queued.
    first = SinkWorker(hook(receiver, group_by=["source"], group_wait=30), store)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    assert first.grouper is not None
    await wait_until(lambda: first.grouper is not None and first.grouper.pending == 5, 10,
                     "rows claimed into the group")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert receiver.received == [] and await depth(store) == 5
    await store.close()
    # 2. After the restart the group forms again from the same rows and goes as one digest.
    store = SQLiteStore(path)
    await store.open()
    second = SinkWorker(hook(receiver, group_by=["source"], group_wait=0.05), store)
    assert await asyncio.wait_for(second.drain(), 20) == 0
    (digest,) = receiver.received
    assert [e["id"] for e in digest.body["events"]] == [e.id for e in events]
    assert await depth(store) == 0
    # 3. Nothing is sent again by a third start.
    third = SinkWorker(hook(receiver, group_by=["source"], group_wait=0.05), store)
    assert await asyncio.wait_for(third.drain(), 20) == 0
    assert len(receiver.received) == 1
    await store.close()


async def test_a_digest_resent_after_its_ack_was_lost_keeps_its_id(
        tmp_path: Path, receiver: Receiver) -> None:
    """Accepted, but the acknowledgement never reached the disk, then the process died: the
    digest is sent again after the restart with the same `webhook-id`, which a receiver
    dedupes on (at-least-once, never silently lost)."""
    path = tmp_path / "bridge.db"
    broken = AckRefusingStore(path)
    await broken.open()
    events = [make_event(f"k{i}") for i in range(3)]
    await commit(broken, events, "hook")
    worker = SinkWorker(hook(receiver, group_by=[], group_wait=0), broken)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await receiver.wait_until(lambda: len(receiver.received) == 1)
    stop.set()
    await asyncio.wait_for(task, 10)
    await broken.close()
    store = SQLiteStore(path)
    await store.open()
    assert await depth(store) == 3
    assert await asyncio.wait_for(SinkWorker(hook(receiver, group_by=[], group_wait=0),
                                             store).drain(), 20) == 0
    first, again = receiver.received
    assert first.id == again.id and first.raw == again.raw
    await store.close()


async def test_a_failing_digest_is_retried_and_a_refused_one_dead_lettered(
        store: SQLiteStore, receiver: Receiver) -> None:
    ok = [make_event(f"a{i}", tenant="t1") for i in range(3)]
    refused = [make_event(f"b{i}", tenant="t2") for i in range(2)]
    await commit(store, ok + refused, "hook")
    ok_id = Digest((("tenant", "t1"),), tuple(ok)).id
    bad_id = Digest((("tenant", "t2"),), tuple(refused)).id
    receiver.script(ok_id, 500, 503)
    receiver.answers[bad_id] = 422
    worker = SinkWorker(hook(receiver, group_by=["tenant"], group_wait=0, max_attempts=5),
                        store)
    assert await asyncio.wait_for(worker.drain(), 20) == 0
    assert [h.status for h in receiver.hits_for(ok_id)] == [500, 503, 200]
    dead = await store.dead_letters()
    assert sorted(d.event_id for d in dead) == sorted(e.id for e in refused)
    assert all(d.error.startswith("digest refused: receiver answered 422") for d in dead)


async def test_the_storm_guard_summarises_the_excess_visibly(
        store: SQLiteStore, receiver: Receiver, log_stream: io.StringIO) -> None:
    configure_logging(LogConfig(format="json"), stream=log_stream)
    events = [make_event(f"k{i}", severity=("low", "critical")[i % 2]) for i in range(35)]
    await commit(store, events, "hook")
    before = metric("bridge_events_summarised_total", "hook")
    worker = SinkWorker(hook(receiver, max_events_per_minute=10, summary_interval=0.3,
                             summary_top=5), store)
    assert await asyncio.wait_for(worker.drain(), 20) == 0
    singles = [r for r in receiver.received if not r.id.startswith("sm-")]
    (summary,) = [r for r in receiver.received if r.id.startswith("sm-")]
    assert [r.id for r in singles] == [e.id for e in events[:10]]
    assert summary.body["count"] == 25 and summary.body["event_ids"] == [
        e.id for e in events[10:]]
    assert summary.body["by_severity"] == {"critical": 12, "low": 13}
    assert [e["severity"] for e in summary.body["top"]] == ["critical"] * 5
    # Nothing dropped: every summarised event is listed, with why and the summary's id,
    # beside the dead letters and not counted as one.
    listed = await store.dead_letters(limit=100)
    assert sorted(d.event_id for d in listed) == sorted(e.id for e in events[10:])
    assert all(d.error.startswith("summarised: storm guard (10 events/minute)") for d in listed)
    assert {d.summary for d in listed} == {summary.id}
    (stats,) = await store.queue_stats()
    assert (stats.depth, stats.dead, stats.summarised) == (0, 0, 25)
    assert worker.summarised == 25 and worker.dead == 0
    assert metric("bridge_events_summarised_total", "hook") - before == 25
    logged = log_stream.getvalue()
    assert '"event": "storm_guard_engaged"' in logged and '"event": "storm_summarised"' in logged


async def test_a_five_thousand_item_first_sweep_reaches_slack_as_a_handful_of_messages(
        store: SQLiteStore) -> None:
    rx = SlackReceiver()
    await rx.start()
    severities = ("critical", "high", "medium", "low", "info")
    events = [make_event(f"F-{i:05d}", severity=severities[i % 5] if i % 7 else "high",
                         title=f"finding {i}") for i in range(5000)]
    await commit(store, events, "chat")  # one sweep's outbox rows
    sink = SlackSinkConfig.model_validate({
        "name": "chat", "type": "slack", "webhook_url": rx.url, "group_by": ["severity"],
        "group_wait": 0.3, "group_interval": 1, "summary_interval": 0.5, "timeout": 5}).build()
    assert sink.config.max_events_per_minute == 60  # the chat default
    worker = SinkWorker(sink, store)
    try:
        assert await asyncio.wait_for(worker.drain(), 60) == 0
    finally:
        await rx.stop()
    assert rx.violations == []
    texts = [m["text"] for m in rx.accepted]
    digests = [int(m.group(1)) for t in texts if (m := re.match(r"(\d+) events: ", t))]
    summaries = [int(m.group(1)) for t in texts
                 if (m := re.search(r"Event storm: (\d+) events summarised", t))]
    singles = len(texts) - len(digests) - len(summaries)
    assert len(texts) <= 10, texts  # a handful of messages, not 5,000
    assert 1 <= len(digests) <= 5 and len(summaries) >= 1 and singles <= 5
    assert sum(digests) + sum(summaries) + singles == 5000  # zero lost
    assert sum(digests) + singles == 60  # the first minute's budget, then summaries
    assert await depth(store, "chat") == 0
    summarised = await store.dead_letters("chat", limit=10_000)
    assert len(summarised) == 4940 and all(d.summary is not None for d in summarised)
    assert await store.dead_letters("chat", summarised=False) == []


def _events(n: int) -> list[Event]:
    return [make_event(f"k{i}") for i in range(n)]


async def test_a_throttled_slack_digest_waits_for_retry_after(store: SQLiteStore) -> None:
    rx = SlackReceiver()
    await rx.start()
    rx.fail_next(Answer(429, "rate_limited", {"Retry-After": "0.4"}))
    await commit(store, _events(4), "chat")
    sink = SlackSinkConfig.model_validate({
        "name": "chat", "type": "slack", "webhook_url": rx.url, "group_by": [],
        "group_wait": 0, "backoff_initial": 0.001, "backoff_max": 0.01}).build()
    try:
        assert await asyncio.wait_for(SinkWorker(sink, store).drain(), 20) == 0
    finally:
        await rx.stop()
    throttled, delivered = rx.hits
    assert (throttled.status, delivered.status) == (429, 200)
    assert delivered.at - throttled.at >= 0.4 - 0.01
    assert rx.accepted[0]["text"] == "4 events: all events"


async def test_bridge_once_does_not_wait_out_group_or_summary_intervals(
        store: SQLiteStore, receiver: Receiver) -> None:
    """Draining (`bridge once`) claims everything there is: no event can join a group any
    more, so groups and the storm summary go at once instead of after an hour."""
    events = [make_event(f"k{i}", severity=("low", "high")[i % 2]) for i in range(30)]
    await commit(store, events, "hook")
    worker = SinkWorker(hook(receiver, group_by=["severity"], group_wait=3600,
                             group_interval=3600, max_events_per_minute=20,
                             summary_interval=3600), store)
    assert await asyncio.wait_for(worker.drain(), 20) == 0
    kinds = sorted(r.body.get("type", "event") for r in receiver.received)
    assert kinds == ["digest", "digest", "storm_summary"]
    counts = [r.body["count"] for r in receiver.received]
    assert sum(counts) == 30 and worker.summarised == 10
