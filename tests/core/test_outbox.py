"""Sink workers with real sinks: a webhook sink against a real aiohttp receiver that can be
scripted to fail, a file sink on disk, and a misbehaving third-party sink. The store is a real
SQLite file; nothing here sleeps to wait: receivers and sinks signal what they saw."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from bridge.health import SinkVerdict
from bridge.model import Event, EventType
from bridge.outbox import SinkWorker
from bridge.sinks.base import PermanentDeliveryError, Sink, SinkConfig
from bridge.sinks.file import FileSink, FileSinkConfig
from bridge.sinks.webhook import WebhookSink, WebhookSinkConfig
from bridge.store.base import SweepCommit, SweepRecord
from bridge.store.sqlite import SQLiteStore
from tests.conftest import base_config, scanorbit_source
from tests.support.daemon import run_cli
from tests.support.receiver import Receiver

from ._helpers import SCOPE, T0, make_event

pytestmark = pytest.mark.timeout(30)

def webhook(rx: Receiver, **kw: Any) -> WebhookSink:
    kw.setdefault("backoff_initial", 0.001)
    kw.setdefault("backoff_max", 0.01)
    kw.setdefault("timeout", 5)
    return WebhookSink(WebhookSinkConfig(type="webhook", name="hook", url=rx.url, **kw))


async def commit(store: SQLiteStore, events: Sequence[Event], sinks: Sequence[str] = ("hook",)
                 ) -> None:
    await store.commit_sweep(SweepCommit(
        record=SweepRecord(scope=SCOPE, source="so", started_at=T0, finished_at=T0,
                           outcome="complete", events=len(events)),
        deliveries=[(e, list(sinks)) for e in events]))


def history(key: str, n: int) -> list[Event]:
    """An item's events in order: new, changed..., resolved."""
    types = [EventType.NEW] + [EventType.CHANGED] * (n - 2) + [EventType.RESOLVED]
    return [make_event(key, type_=t, counter=i + 1) for i, t in enumerate(types[:n])]


async def drain(worker: SinkWorker) -> int:
    return await asyncio.wait_for(worker.drain(), 20)


async def pending(store: SQLiteStore, sink: str = "hook") -> int:
    return {s.sink: s.depth for s in await store.queue_stats()}.get(sink, 0)


# -- webhook -----------------------------------------------------------------------------------


async def test_all_delivered_with_idempotency_headers_and_intact_bodies(
        store: SQLiteStore, receiver: Receiver) -> None:
    events = [make_event(f"k{i}", severity="critical", attributes={"i": i}) for i in range(5)]
    await commit(store, events)
    worker = SinkWorker(webhook(receiver), store)
    assert await drain(worker) == 0
    assert sorted(receiver.accepted) == sorted(e.id for e in events)
    assert {h.id: h.event for h in receiver.attempts} == {e.id: e for e in events}
    assert worker.delivered == 5 and worker.dead == 0
    assert await pending(store) == 0


async def test_retry_then_success_same_ids_nothing_lost(store: SQLiteStore,
                                                        receiver: Receiver) -> None:
    events = [make_event(f"k{i}") for i in range(4)]
    receiver.script(events[1], 500, 503)
    receiver.script(events[3], 502)
    await commit(store, events)
    statuses: list[tuple[bool, str | None]] = []
    worker = SinkWorker(webhook(receiver, max_attempts=5), store,
                        on_status=lambda name, v: statuses.append((v.healthy, v.error)))
    assert await drain(worker) == 0
    assert set(receiver.accepted) == {e.id for e in events}
    assert {h.id for h in receiver.attempts} == {e.id for e in events}  # no new ids
    assert [h.status for h in receiver.hits_for(events[1])] == [500, 503, 200]
    assert all(h.event == events[1] for h in receiver.hits_for(events[1]))
    assert await store.dead_letters() == []
    assert await pending(store) == 0
    assert statuses[0][0] is False and "500" in (statuses[0][1] or "")
    assert statuses[-1] == (True, None)


async def test_retry_after_is_honoured(store: SQLiteStore, receiver: Receiver) -> None:
    ev = make_event("k")
    receiver.script(ev, (429, {"Retry-After": "0.3"}))
    await commit(store, [ev])
    # Backoff alone would retry within 10 ms; only Retry-After can explain a longer wait.
    worker = SinkWorker(webhook(receiver, backoff_initial=0.001, backoff_max=0.01), store)
    assert await drain(worker) == 0
    first, second = receiver.hits_for(ev)
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.3 - 0.005
    assert second.at - first.at < 5


async def test_backoff_without_retry_after_is_bounded_by_backoff_max(
        store: SQLiteStore, receiver: Receiver) -> None:
    ev = make_event("k")
    receiver.script(ev, 503, 503, 503)
    await commit(store, [ev])
    worker = SinkWorker(webhook(receiver, backoff_initial=0.02, backoff_max=0.05), store)
    assert await drain(worker) == 0
    times = [h.at for h in receiver.hits_for(ev)]
    assert len(times) == 4
    # Full jitter: each wait is in [0, min(max, initial * 2**n)]; never above backoff_max
    # (plus scheduling slack).
    assert all(b - a < 0.05 + 0.5 for a, b in itertools.pairwise(times))


async def test_rejected_event_is_dead_lettered_after_one_attempt_others_delivered(
        store: SQLiteStore, receiver: Receiver) -> None:
    events = [make_event(f"k{i}") for i in range(4)]
    receiver.answers[events[2].id] = 400
    await commit(store, events)
    worker = SinkWorker(webhook(receiver, max_attempts=10), store)
    assert await drain(worker) == 0
    assert len(receiver.hits_for(events[2])) == 1
    assert set(receiver.accepted) == {events[0].id, events[1].id, events[3].id}
    (dead,) = await store.dead_letters("hook")
    assert dead.event == events[2]
    assert dead.attempts == 1
    assert "400" in dead.error and dead.error.startswith("rejected")
    assert worker.dead == 1 and worker.delivered == 3
    assert await pending(store) == 0


async def test_max_attempts_exhausted_goes_to_dead_letters_then_the_queue_moves_on(
        store: SQLiteStore, receiver: Receiver) -> None:
    poison, *rest = [make_event(f"k{i}") for i in range(3)]
    receiver.answers[poison.id] = 503
    await commit(store, [poison, *rest])
    worker = SinkWorker(webhook(receiver, max_attempts=3, batch_size=1), store)
    assert await drain(worker) == 0
    assert [h.status for h in receiver.hits_for(poison)] == [503, 503, 503]
    (dead,) = await store.dead_letters()
    assert dead.event == poison and dead.attempts == 3
    assert dead.error.startswith("gave up after 3 attempts")
    assert receiver.accepted == [e.id for e in rest]
    # Head-of-line: nothing behind the poison event was sent while it was being retried.
    first_rest = min(h.at for h in receiver.attempts if h.id != poison.id)
    assert first_rest > max(h.at for h in receiver.hits_for(poison))


async def test_one_exhausted_event_does_not_bury_its_batch_mates(
        store: SQLiteStore, receiver: Receiver) -> None:
    poison, *good = [make_event(f"k{i}") for i in range(4)]
    receiver.answers[poison.id] = 503
    await commit(store, [poison, *good])
    worker = SinkWorker(webhook(receiver, max_attempts=3, batch_size=10), store)
    assert await drain(worker) == 0
    (dead,) = await store.dead_letters()
    assert dead.event == poison and dead.attempts == 3
    assert len(receiver.hits_for(poison)) == 3  # max_attempts, not one more
    assert set(receiver.accepted) == {e.id for e in good}
    assert worker.dead == 1


async def test_per_item_order_is_preserved_under_failures(store: SQLiteStore,
                                                          receiver: Receiver) -> None:
    a, b, c = history("a", 4), history("b", 3), history("c", 2)
    # The first event of each item fails once; later events of the same item must not be
    # accepted before it, in whichever batch they travel.
    receiver.script(a[0], 500)
    receiver.script(b[0], 503)
    receiver.script(a[2], 502, 500)
    receiver.script(c[1], 500)
    interleaved = [a[0], b[0], a[1], c[0], b[1], a[2], c[1], b[2], a[3]]
    await commit(store, interleaved[:5])
    await commit(store, interleaved[5:])
    worker = SinkWorker(webhook(receiver, max_attempts=10), store)
    assert await drain(worker) == 0
    assert receiver.order_violations == []
    assert set(receiver.accepted) == {e.id for e in interleaved}
    assert await store.dead_letters() == []


@pytest.mark.parametrize("batch_size", [1, 2, 3])
async def test_per_item_order_with_small_batches(store: SQLiteStore, receiver: Receiver,
                                                 batch_size: int) -> None:
    a, b = history("a", 3), history("b", 3)
    receiver.script(a[0], 500)
    receiver.script(b[1], 500, 500)
    await commit(store, [a[0], b[0], a[1], b[1], a[2], b[2]])
    worker = SinkWorker(webhook(receiver, batch_size=batch_size, max_attempts=10), store)
    assert await drain(worker) == 0
    assert receiver.order_violations == []
    assert len(set(receiver.accepted)) == 6


async def test_dead_letters_listed_replayed_and_delivered(store: SQLiteStore,
                                                          receiver: Receiver) -> None:
    good, bad = make_event("good"), make_event("bad", severity="critical")
    receiver.script(bad, 422)  # rejected once; the receiver is fixed before the replay
    await commit(store, [good, bad])
    worker = SinkWorker(webhook(receiver), store)
    assert await drain(worker) == 0
    (dead,) = await store.dead_letters("hook")
    assert dead.event == bad and "422" in dead.error
    assert receiver.accepted == [good.id]

    assert await store.replay("hook") == 1
    assert await store.dead_letters() == []
    assert await pending(store) == 1
    worker = SinkWorker(webhook(receiver), store)
    assert await drain(worker) == 0
    assert receiver.accepted == [good.id, bad.id]
    last = receiver.hits_for(bad)[-1]
    assert last.id == bad.id and last.event == bad  # same id: the receiver can dedupe
    assert await pending(store) == 0


async def test_an_undecodable_stored_event_is_dead_lettered_and_the_rest_delivered(
        store: SQLiteStore, tmp_path: Path) -> None:
    events = [make_event(k) for k in ("a", "b", "c")]
    await commit(store, events, sinks=["file"])
    conn = sqlite3.connect(store.path)
    with conn:  # a damaged file, or a body written by an incompatible version
        conn.execute("UPDATE outbox SET body = ? WHERE event_id = ?", ('{"id": "b", "cut', events[1].id))
    conn.close()
    path = tmp_path / "out.jsonl"
    worker = SinkWorker(FileSink(FileSinkConfig(type="file", name="file", path=path)), store)
    assert await drain(worker) == 0
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [Event.from_json(line) for line in lines] == [events[0], events[2]]
    (dead,) = await store.dead_letters("file")
    assert dead.event_id == events[1].id and dead.event is None
    assert dead.error.startswith("undecodable event: ") and worker.dead == 1


async def test_dlq_list_shows_an_undecodable_dead_letter(tmp_path: Path) -> None:
    config = base_config(tmp_path, [scanorbit_source("http://127.0.0.1:1")])
    store = SQLiteStore(config["state"]["path"])
    await store.open()
    try:
        good, bad = make_event("good"), make_event("bad")
        await commit(store, [good, bad], sinks=["events"])
        seqs = [d.seq for d in await store.claim("events", 2)]
        conn = sqlite3.connect(store.path)
        with conn:
            conn.execute("UPDATE outbox SET body = 'garbage' WHERE event_id = ?", (bad.id,))
        conn.close()
        await store.bury("events", seqs, "undecodable event: test")
    finally:
        await store.close()
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out, err = await run_cli("dlq", "list", "--json", "--config", str(path))
    assert code == 0 and "Traceback" not in err, err
    rows = {r["event"]: r for r in json.loads(out)}
    assert rows[bad.id]["title"] == "(undecodable)" and rows[good.id]["title"] == good.title


async def test_an_unreachable_receiver_spends_no_attempts(store: SQLiteStore) -> None:
    """Connection refused is an outage, not the events' fault: however many retries it takes,
    the events keep their attempts and wait in the outbox (no dead letters), then go."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    sink = WebhookSink(WebhookSinkConfig(type="webhook", name="hook",
                                         url=f"http://127.0.0.1:{port}/hook", max_attempts=2,
                                         backoff_initial=0.001, backoff_max=0.01, timeout=2))
    ev = make_event("k")
    await commit(store, [ev])
    refusals: list[str] = []
    stop = asyncio.Event()

    def status(name: str, verdict: SinkVerdict) -> None:
        if not verdict.healthy:
            refusals.append(verdict.error or "")
            if len(refusals) == 6:  # three times max_attempts
                stop.set()

    assert await asyncio.wait_for(SinkWorker(sink, store, status).drain(stop), 20) == 1
    assert len(refusals) == 6 and all("ClientConnectorError" in e for e in refusals), refusals
    assert await store.dead_letters() == []
    (queued,) = await store.claim("hook", 10)
    assert queued.event == ev and queued.attempts == 0

    back = await Receiver().start(port)
    try:
        assert await drain(SinkWorker(sink, store)) == 0
        assert back.accepted == [ev.id]
    finally:
        await back.stop()


# -- throttling is not refusal (issue 25) ---------------------------------------------------------


@pytest.mark.parametrize("answer", [
    (429, {"Retry-After": "0.05"}), (429, {}), (503, {"Retry-After": "0.05"}), (408, {}),
], ids=["429+retry-after", "429", "503+retry-after", "408"])
async def test_a_long_throttle_spends_no_attempts(
        store: SQLiteStore, receiver: Receiver, answer: tuple[int, dict[str, str]]) -> None:
    """Far more throttled answers than max_attempts (the clock scaled down: Retry-After in
    hundredths of a second): nothing is dead-lettered, everything arrives, and never before
    the receiver's Retry-After."""
    events = [make_event(f"k{i}") for i in range(3)]
    for ev in events:
        receiver.script(ev, *[answer] * 8)
    await commit(store, events)
    worker = SinkWorker(webhook(receiver, max_attempts=2), store)
    assert await drain(worker) == 0
    assert await store.dead_letters() == [] and worker.dead == 0
    assert sorted(receiver.accepted) == sorted(e.id for e in events)
    if "Retry-After" in answer[1]:
        for ev in events:
            hits = receiver.hits_for(ev)
            assert all(b.at - a.at >= 0.05 - 0.005 for a, b in itertools.pairwise(hits))


async def test_plain_server_errors_spend_attempts_unless_configured_not_to(
        store: SQLiteStore, receiver: Receiver) -> None:
    counted, spared = make_event("k1"), make_event("k2")
    receiver.script(counted, *[500] * 3)
    receiver.script(spared, *[500] * 3)
    await commit(store, [counted])
    assert await drain(SinkWorker(webhook(receiver, max_attempts=2), store)) == 0
    assert [d.event for d in await store.dead_letters()] == [counted]
    await commit(store, [spared])
    assert await drain(SinkWorker(webhook(receiver, max_attempts=2, count_failures=False),
                                  store)) == 0
    assert receiver.accepted == [spared.id]


async def test_a_receiver_that_comes_back_is_used_within_the_probe_interval(
        store: SQLiteStore) -> None:
    """A throttle first drives the attempt count up; then the receiver goes away and comes
    back. Every retry of the unreachable receiver waits at most `probe_interval`, so delivery
    resumes within that long of its return (backoff alone would wait up to a minute here)."""
    receiver = await Receiver().start()
    ev = make_event("k")
    receiver.script(ev, *[(429, {"Retry-After": "0.01"})] * 6)
    port = receiver.port
    await commit(store, [ev])
    sink = WebhookSink(WebhookSinkConfig(
        type="webhook", name="hook", url=f"http://127.0.0.1:{port}/hook", backoff_initial=1,
        backoff_max=60, probe_interval=0.2, timeout=2))
    refused = asyncio.Event()

    def status(name: str, verdict: SinkVerdict) -> None:
        if verdict.state == "unreachable":
            assert verdict.next_attempt_at is not None
            refused.set()

    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(SinkWorker(sink, store, status).run(stop))
        try:
            await receiver.wait_until(lambda: len(receiver.attempts) == 6)
            await receiver.stop()
            await asyncio.wait_for(refused.wait(), 10)
            await receiver.start(port)
            returned = time.monotonic()
            await receiver.wait_until(lambda: receiver.accepted == [ev.id])
            assert receiver.attempts[6].at - returned <= 0.2 + 1.0  # the probe interval + slack
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await receiver.stop()
    failures = [e for e in logs if e["event"] == "delivery_failed"]
    assert [f["trouble"] for f in failures[:6]] == ["throttled"] * 6
    assert {f["trouble"] for f in failures[6:]} == {"unreachable"}
    assert all(f["retry_in"] <= 0.2 for f in failures[6:]), failures
    assert await store.dead_letters() == []


# -- a running worker --------------------------------------------------------------------------


async def test_running_worker_delivers_on_wake_and_stops(store: SQLiteStore,
                                                         receiver: Receiver) -> None:
    worker = SinkWorker(webhook(receiver), store)
    worker.idle_poll = 30  # only wake() can make it look again within the test
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        first = [make_event("a"), make_event("b")]
        await commit(store, first)
        worker.wake()
        await receiver.wait_until(lambda: len(receiver.accepted) == 2)
        receiver.script(make_event("c"), 500)
        await commit(store, [make_event("c")])
        worker.wake()
        await receiver.wait_until(lambda: make_event("c").id in receiver.accepted)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert await pending(store) == 0


async def test_stop_during_backoff_returns_promptly_and_keeps_the_event(
        store: SQLiteStore, receiver: Receiver) -> None:
    ev = make_event("k")
    receiver.answers[ev.id] = 503
    await commit(store, [ev])
    worker = SinkWorker(webhook(receiver, backoff_initial=60, backoff_max=60), store)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await receiver.wait_until(lambda: len(receiver.attempts) >= 1)
    stop.set()
    await asyncio.wait_for(task, 5)
    (left,) = await store.claim("hook", 10)
    assert left.event == ev and left.attempts == 1


# -- file sink ---------------------------------------------------------------------------------


async def test_file_sink_writes_json_lines_that_parse_back(store: SQLiteStore,
                                                           tmp_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    events = [
        make_event("a", tenant="acme", attributes={"region": "eu", "n": 1.5, "ok": True},
                   raw={"nested": {"list": [1, "two", None]}, "ünïcode": "✓"}),
        make_event("a", type_=EventType.CHANGED, counter=2,
                   changes={"severity": ("low", "high"), "title": (None, "t")},
                   reason="changed: severity, title"),
        make_event("b", type_=EventType.RESOLVED, counter=5, reason="absent from 2 sweeps"),
    ]
    await commit(store, events[:2], sinks=["file"])
    await commit(store, events[2:], sinks=["file"])
    sink = FileSink(FileSinkConfig(type="file", name="file", path=path, fsync="batch",
                                   batch_size=2))
    worker = SinkWorker(sink, store)
    assert await drain(worker) == 0
    assert (path.stat().st_mode & 0o777) == 0o600
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [Event.from_json(line) for line in lines] == events
    # Appends, never truncates: a second worker adds after what is there.
    more = make_event("c")
    await commit(store, [more], sinks=["file"])
    assert await drain(SinkWorker(FileSink(sink.config), store)) == 0
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [Event.from_json(line) for line in lines] == [*events, more]
    assert await pending(store, "file") == 0


# -- a misbehaving third-party sink ------------------------------------------------------------


class FlakyConfig(SinkConfig):
    type: str = "flaky"


class FlakySink(Sink[FlakyConfig]):
    """Stands in for a third-party sink with a bug: crashes on its first send."""

    def __init__(self, crash_times: int = 1, reject: set[str] | None = None) -> None:
        super().__init__(FlakyConfig(name="flaky", backoff_initial=0.001, backoff_max=0.01,
                                     batch_size=3))
        self.crashes_left = crash_times
        self.reject = reject or set()
        self.received: list[Event] = []
        self.calls: list[list[str]] = []
        self.got = asyncio.Event()
        self.expect = 0

    async def send(self, events: Sequence[Event]) -> None:
        self.calls.append([e.key for e in events])
        if self.crashes_left:
            self.crashes_left -= 1
            raise RuntimeError("bug in a third-party sink")
        bad = [e for e in events if e.key in self.reject]
        if bad:
            raise PermanentDeliveryError(f"cannot encode {bad[0].key}")  # no event ids given
        self.received.extend(events)
        if len(self.received) >= self.expect:
            self.got.set()


async def test_sink_crash_does_not_kill_the_worker_and_loses_nothing(
        store: SQLiteStore) -> None:
    sink = FlakySink(crash_times=2)
    events = [make_event(f"k{i}") for i in range(5)]
    sink.expect = 5
    await commit(store, events, sinks=["flaky"])
    statuses: list[bool] = []
    worker = SinkWorker(sink, store, on_status=lambda n, v: statuses.append(v.healthy))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(sink.got.wait(), 10)
        assert not task.done()
        # Still alive for the next commit.
        later = make_event("later")
        sink.got.clear()
        sink.expect = 6
        await commit(store, [later], sinks=["flaky"])
        worker.wake()
        await asyncio.wait_for(sink.got.wait(), 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert sink.received == [*events, later]
    assert sink.calls[:2] == [["k0", "k1", "k2"], ["k0", "k1", "k2"]]  # same batch retried
    assert statuses[:2] == [False, False] and statuses[-1] is True
    assert await store.dead_letters() == []
    assert await pending(store, "flaky") == 0


async def test_unattributed_rejection_is_isolated_one_by_one(store: SQLiteStore) -> None:
    sink = FlakySink(crash_times=0, reject={"k1"})
    events = [make_event(f"k{i}") for i in range(5)]
    await commit(store, events, sinks=["flaky"])
    worker = SinkWorker(sink, store)
    assert await drain(worker) == 0
    (dead,) = await store.dead_letters()
    assert dead.event.key == "k1" and dead.attempts == 1
    assert [e.key for e in sink.received] == ["k0", "k2", "k3", "k4"]
    # The whole batch was refused once, then sent singly until the culprit was found.
    assert sink.calls[0] == ["k0", "k1", "k2"]
    assert sink.calls[1:3] == [["k0"], ["k1"]]


# -- the operator's view: `bridge dlq list` / `bridge dlq replay` ------------------------------


async def bridge(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_dlq_cli_lists_and_replays_while_the_store_is_open(
        store: SQLiteStore, receiver: Receiver, tmp_path: Path) -> None:
    good, bad = make_event("good"), make_event("bad", title="Rejected once")
    receiver.script(bad, 400)
    await commit(store, [good, bad])
    assert await drain(SinkWorker(webhook(receiver), store)) == 0
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump({
        "state": {"path": str(store.path)},
        "log": {"level": "error"},
        "admin": {"enabled": False},
        "sinks": [{"type": "webhook", "name": "hook", "url": receiver.url}],
        "routes": {"sinks": ["hook"]},
    }))

    code, out, err = await bridge("dlq", "list", "--config", str(config), "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert (row["sink"], row["event"], row["type"], row["title"], row["attempts"]) == (
        "hook", bad.id, "new", "Rejected once", 1)
    assert "400" in row["error"]

    code, out, err = await bridge("dlq", "replay", "--config", str(config), "--sink", "hook")
    assert code == 0, err
    assert out.startswith("replayed 1 dead letter(s)")
    assert await store.dead_letters() == []
    assert await drain(SinkWorker(webhook(receiver), store)) == 0
    assert receiver.accepted == [good.id, bad.id]

