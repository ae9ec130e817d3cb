"""A receiver restart mid-stream loses nothing on TCP and TLS.

The test plays the outbox worker: it sends batches back to back and retries a failed batch
(after `close()`, as the worker does) until it succeeds, while rsyslogd is stopped with SIGTERM
in the middle of the stream and started again. At the end every event id is in rsyslogd's
output at least once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.sinks.base import RetryableDeliveryError
from tests.support.waiting import wait_until
from tests.syslog.conftest import Certs, make_config, start_rsyslogd, wait_records
from tests.syslog.events import event

BATCH = 250


@pytest.mark.parametrize("protocol", ["tcp", "tls"])
async def test_restart_mid_stream_loses_nothing(certs: Certs, tmp_path: Path,
                                                protocol: str) -> None:
    daemon = start_rsyslogd(tmp_path / "rsyslog", certs)
    try:
        sink = make_config(daemon, certs, protocol, batch_size=BATCH).build()
        sent: list[str] = []
        delivered, failures = [0], [0]
        done = asyncio.Event()

        async def worker() -> None:
            while not done.is_set():
                batch = [event(title=f"restart {delivered[0]}.{i}") for i in range(BATCH)]
                sent.extend(e.id for e in batch)
                while True:
                    try:
                        await sink.send(batch)
                    except RetryableDeliveryError:
                        failures[0] += 1
                        await sink.close()
                        await asyncio.sleep(0.01)  # the worker's backoff
                        continue
                    delivered[0] += 1
                    await asyncio.sleep(0)  # let the test's coroutine run between batches
                    break

        task = asyncio.create_task(worker())
        try:
            await wait_until(lambda: delivered[0] >= 5, 20, "a few batches before the stop")
            await asyncio.to_thread(daemon.stop)  # SIGTERM while batches are in flight
            await wait_until(lambda: failures[0] > 0, 20, "a failed send while it is down")
            await asyncio.to_thread(daemon.start)
            resumed = delivered[0]
            await wait_until(lambda: delivered[0] >= resumed + 5, 30, "batches after restart")
            done.set()
            await asyncio.wait_for(task, 30)
            await sink.close()
            received = await wait_records(daemon, protocol, sent, timeout=30)
        except (AssertionError, TimeoutError) as exc:
            log = daemon.logfile.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc}\n{delivered[0]} batches delivered, {failures[0]} failed "
                                 f"sends, {len(sent)} events sent; rsyslogd said:\n{log}") from exc
        finally:
            task.cancel()
        assert all(received[i] for i in sent)
    finally:
        daemon.stop()
