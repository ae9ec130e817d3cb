"""A dead receiver fills the outbox, not memory, and not the dead letters.

The real delivery path: a SQLite outbox, the sink worker, the syslog sink and rsyslogd, which is
down while the worker retries (many times its `max_attempts`), then comes back. Every event
must then arrive, first copies in commit order.
"""

from __future__ import annotations

import asyncio
import gc
import re
from pathlib import Path

import pytest

from bridge.health import SinkVerdict
from bridge.model import Event
from bridge.outbox import SinkWorker
from bridge.store.sqlite import SQLiteStore
from tests.syslog.conftest import Certs, make_config, start_rsyslogd, wait_records
from tests.syslog.events import event

EVENT_ID = re.compile(r"[0-9a-f]{32}")
EVENTS = 3_000
BATCH = 100


def live_events() -> int:
    """Event objects anywhere in this process (the test itself keeps only their ids)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Event)


@pytest.mark.parametrize("protocol", ["tcp", "tls"])
async def test_a_dead_receiver_fills_the_outbox_not_memory(certs: Certs, tmp_path: Path,
                                                           protocol: str) -> None:
    daemon = start_rsyslogd(tmp_path / "rsyslog", certs)
    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    task: asyncio.Task[None] | None = None
    try:
        daemon.stop()
        ids: list[str] = []
        for start in range(0, EVENTS, 500):
            chunk = [event(title=f"outage {i}", key=f"F-{i}") for i in range(start, start + 500)]
            ids.extend(e.id for e in chunk)
            await store.commit_chunk("scanorbit", [], [(e, ["siem"]) for e in chunk])
            del chunk
        baseline = live_events()

        failures: list[str] = []
        failing = asyncio.Event()

        def status(name: str, verdict: SinkVerdict) -> None:
            if not verdict.healthy:
                failures.append(verdict.error or "")
                if len(failures) >= 6:  # three times max_attempts
                    failing.set()

        sink = make_config(daemon, certs, protocol, batch_size=BATCH, max_attempts=2,
                           backoff_initial=0.005, backoff_max=0.02).build()
        worker = SinkWorker(sink, store, status)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(failing.wait(), 30)

        # Nothing dropped, nothing buried, nothing counted against the events...
        (stats,) = await store.queue_stats()
        assert (stats.depth, stats.dead) == (EVENTS, 0)
        assert all("cannot connect" in f for f in failures), failures[:3]
        assert {d.attempts for d in await store.claim("siem", EVENTS)} == {0}
        # ...and in memory at most the batch being retried and the one claimed behind it.
        assert live_events() - baseline <= 2 * BATCH

        await asyncio.to_thread(daemon.start)
        await wait_records(daemon, protocol, ids, timeout=60)
        wanted, order = set(ids), []
        for record in daemon.records(protocol):  # in arrival order
            order.extend(i for i in EVENT_ID.findall(record["raw"]) if i in wanted)
        assert list(dict.fromkeys(order)) == ids  # first copies in commit order
        stop.set()
        worker.wake()
        await asyncio.wait_for(task, 30)
        assert await store.queue_stats() == []  # nothing pending, nothing dead
        assert worker.delivered == EVENTS
    finally:
        if task is not None and not task.done():
            task.cancel()
        await store.close()
        daemon.stop()
