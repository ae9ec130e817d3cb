"""Delivery faults that must neither lose nor duplicate: a receiver that fails part of a batch,
a state store that fails under the sink worker (a full disk), a file sink that runs out of
room half-way through a batch. Real SQLite, real HTTP, real file-size limits."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import structlog

from bridge.model import Event, EventType
from bridge.outbox import ACK_WINDOW_BATCHES, SinkWorker
from bridge.sinks.base import Sink, SinkConfig
from bridge.sinks.webhook import WebhookSink, WebhookSinkConfig
from bridge.store.base import SweepCommit, SweepRecord
from bridge.store.sqlite import SQLiteStore
from tests.core._helpers import SCOPE, T0, make_event
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


async def commit(store: SQLiteStore, events: Sequence[Event]) -> None:
    await store.commit_sweep(SweepCommit(
        record=SweepRecord(scope=SCOPE, source="so", started_at=T0, finished_at=T0,
                           outcome="complete", events=len(events)),
        deliveries=[(e, ["hook"]) for e in events]))


def webhook(url: str) -> Sink[SinkConfig]:
    sink = WebhookSink(WebhookSinkConfig(type="webhook", name="hook", url=url, batch_size=10,
                                         backoff_initial=0.001, backoff_max=0.01, timeout=5))
    return cast("Sink[SinkConfig]", sink)


async def test_a_partly_failed_batch_resends_only_what_did_not_arrive(
    store: SQLiteStore, receiver: Receiver
) -> None:
    events = [make_event(f"k{i}") for i in range(8)]
    chain = [make_event("kx", type_=EventType.NEW, counter=1),
             make_event("kx", type_=EventType.CHANGED, counter=2, severity="critical")]
    for failing in (events[3], events[6], chain[0]):
        receiver.script(failing, 503)
    await commit(store, [*events, *chain])
    worker = SinkWorker(webhook(receiver.url), store)
    assert await asyncio.wait_for(worker.drain(), 20) == 0
    # Everything arrived exactly once: the batch-mates accepted before the failures were
    # acknowledged, not sent again with the retry.
    assert Counter(receiver.accepted) == Counter(e.id for e in [*events, *chain])
    # And one item's events still arrive in order: #2 was held back until #1 went through.
    assert [r.body["counter"] for r in receiver.received if r.body["key"] == "kx"] == [1, 2]
    assert worker.delivered == 10 and await store.dead_letters() == []


class RefusingStore(SQLiteStore):
    """A real store whose next `fail[kind]` writes of one kind ("ack", "bury") fail the way a
    full disk makes them fail: the receiver's answer is in, the store cannot record it."""

    def __init__(self, path: Path, fail: dict[str, int]) -> None:
        super().__init__(path)
        self.fail = fail
        self.refused: list[str] = []

    def _refuse(self, kind: str) -> None:
        if self.fail.get(kind, 0) > 0:
            self.fail[kind] -= 1
            self.refused.append(kind)
            raise sqlite3.OperationalError("database or disk is full")

    async def ack(self, sink: str, seqs: Sequence[int]) -> None:
        self._refuse("ack")
        await super().ack(sink, seqs)

    async def bury(self, sink: str, seqs: Sequence[int], error: str, *,
                   summary: str | None = None) -> None:
        self._refuse("bury")
        await super().bury(sink, seqs, error, summary=summary)


async def test_a_failing_store_does_not_stop_the_sink_worker(
    tmp_path: Path, receiver: Receiver
) -> None:
    store = RefusingStore(tmp_path / "bridge.db", {"ack": 2})
    await store.open()
    statuses: list[tuple[bool, str | None]] = []
    try:
        events = [make_event(f"k{i}") for i in range(25)]
        await commit(store, events)
        worker = SinkWorker(webhook(receiver.url), store,
                            on_status=lambda _, v: statuses.append((v.healthy, v.error)))
        stop = asyncio.Event()
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(worker.run(stop))
            await wait_until(lambda: len(set(receiver.accepted)) == 25, 20, "all 25 delivered")
            await wait_until(lambda: worker.delivered == 25, 20, "all 25 acknowledged")
            stop.set()
            await asyncio.wait_for(task, 10)
        assert not task.exception()
        # The acknowledgement was written again, the batch was not sent again.
        assert Counter(receiver.accepted) == Counter(e.id for e in events)
        failures = [e for e in logs if e["event"] == "sink_store_failed"]
        assert len(failures) == 2 and "database or disk is full" in failures[0]["error"]
        assert (False, "state store: OperationalError: database or disk is full") in statuses
        assert statuses[-1] == (True, None)
    finally:
        await store.close()


class HeldStore(RefusingStore):
    """A real store whose acknowledgements wait until `release` is set, as they wait behind a
    sweep's chunk commit on the store's one writer (then some may still fail: `fail`)."""

    def __init__(self, path: Path, fail: dict[str, int]) -> None:
        super().__init__(path, fail)
        self.release = asyncio.Event()
        self.acks: list[list[int]] = []

    async def ack(self, sink: str, seqs: Sequence[int]) -> None:
        await self.release.wait()
        self.acks.append(list(seqs))
        await super().ack(sink, seqs)


@pytest.mark.parametrize("failing_acks", [0, 2])
async def test_batches_go_on_while_acknowledgements_wait_up_to_the_window(
        tmp_path: Path, receiver: Receiver, failing_acks: int) -> None:
    """While the store holds an acknowledgement, the worker sends on until the window's
    batches wait to be acknowledged, then waits; released, the waiting rows are acknowledged
    together, and every event arrives once, in commit order, even when those writes fail."""
    store = HeldStore(tmp_path / "bridge.db", {"ack": failing_acks})
    await store.open()
    try:
        window = ACK_WINDOW_BATCHES * 10  # batches of 10
        events = [make_event(f"k{i}") for i in range(window + 60)]
        await commit(store, events)
        worker = SinkWorker(webhook(receiver.url), store)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await wait_until(lambda: len(receiver.accepted) == window, 10, "the window sent")
        # Held there: no further batch goes, and nothing counts as delivered until on disk.
        with pytest.raises(TimeoutError):
            await wait_until(lambda: len(receiver.accepted) > window, 0.3, "more sent")
        assert worker.delivered == 0
        store.release.set()
        await wait_until(lambda: worker.delivered == len(events), 20, "all acknowledged")
        stop.set()
        await asyncio.wait_for(task, 10)
        assert receiver.accepted == [e.id for e in events]
        assert await store.claim("hook", 1000) == []
        assert store.refused == ["ack"] * failing_acks
        first, waiting = list(range(1, 11)), list(range(11, window + 1))
        if not failing_acks:
            # The rows sent while the first acknowledgement waited went in one write.
            assert store.acks[:2] == [first, waiting]
        else:
            # The first write failed: every row sent by then was acknowledged again at once.
            assert store.acks[:2] == [first, first + waiting]
    finally:
        await store.close()


@pytest.mark.parametrize("failures", [1, 5])
async def test_an_acknowledgement_that_cannot_be_written_is_retried_not_the_delivery(
        tmp_path: Path, receiver: Receiver, failures: int) -> None:
    """However long the store refuses, the receiver sees each event once (issue 24)."""
    store = RefusingStore(tmp_path / "bridge.db", {"ack": failures})
    await store.open()
    try:
        events = [make_event(f"k{i}") for i in range(25)]
        await commit(store, events)
        worker = SinkWorker(webhook(receiver.url), store)
        assert await asyncio.wait_for(worker.drain(), 20) == 0
        assert store.refused == ["ack"] * failures
        assert Counter(receiver.accepted) == Counter(e.id for e in events)
        assert worker.delivered == len(events) and await store.dead_letters() == []
    finally:
        await store.close()


async def test_a_dead_letter_that_cannot_be_written_is_retried_not_the_delivery(
        tmp_path: Path, receiver: Receiver) -> None:
    store = RefusingStore(tmp_path / "bridge.db", {"bury": 3})
    await store.open()
    try:
        events = [make_event(f"k{i}") for i in range(3)]
        receiver.answers[events[1].id] = 422
        await commit(store, events)
        worker = SinkWorker(webhook(receiver.url), store)
        assert await asyncio.wait_for(worker.drain(), 20) == 0
        assert store.refused == ["bury"] * 3
        # Refused once, not once per failed write of the dead letter.
        assert [h.id for h in receiver.attempts if h.status == 422] == [events[1].id]
        assert Counter(receiver.accepted) == Counter([events[0].id, events[2].id])
        (dead,) = await store.dead_letters("hook")
        assert dead.event == events[1] and "422" in dead.error
        assert worker.dead == 1 and worker.delivered == 2
    finally:
        await store.close()


FILE_SINK_UNDER_LIMIT = textwrap.dedent("""
    import asyncio, json, resource, signal, sys
    from pathlib import Path
    from bridge.sinks.base import RetryableDeliveryError
    from bridge.sinks.file import FileSink, FileSinkConfig
    from tests.core._helpers import make_event

    path = Path(sys.argv[1])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    async def main():
        sink = FileSink(FileSinkConfig(type="file", name="f", path=path))
        events = [make_event(f"k{i}", title="x" * 200) for i in range(20)]
        resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 3000, resource.RLIM_INFINITY))
        errors = []
        try:
            await sink.send(events)
        except RetryableDeliveryError as exc:
            errors.append(str(exc))
        await sink.close()
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        await sink.open()
        await sink.send(events)
        await sink.close()
        print(json.dumps({"errors": errors, "ids": [e.id for e in events]}))

    asyncio.run(main())
""")


def test_a_file_sink_cut_short_by_a_full_disk_leaves_only_whole_lines(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    # A partial last line, as a crash between two writes of one batch would leave it.
    out.write_bytes(json.dumps({"earlier": 1}).encode() + b"\n" + b'{"id": "cut sho')
    result = subprocess.run([sys.executable, "-c", FILE_SINK_UNDER_LIMIT, str(out)],
                            capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["errors"] and "File too large" in report["errors"][0]
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    parsed = [json.loads(line) for line in lines[:-1]]  # every line is whole JSON
    assert parsed[0] == {"earlier": 1}
    assert [p["id"] for p in parsed[1:]] == report["ids"]  # each event once, in order
