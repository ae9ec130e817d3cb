"""A receiver that hangs, then dies: what it never read comes again (issue 20, TCP and TLS).

rsyslogd is stopped with SIGSTOP while bursts are written (its kernel acknowledges what fits its
socket buffer, the rest waits unacknowledged in ours), then SIGKILLed, which throws its socket
buffer away, and started again on the same port. The hang lasts three times the age limit the
resend window used to have (`resend_window_seconds`, which now applies only where the kernel
cannot report acknowledgements): on Linux what is kept follows TCP's acknowledgements, not the
clock. Every event must arrive; duplicates only of what the dead receiver may not have read.

The test plays the outbox worker (as test_rsyslog_restart does): a batch that fails is retried,
after `close()`, until it is delivered. rsyslogd is stopped only once everything before has
been written to its file, so that nothing sits in its own memory: losing that is rsyslogd's
part (its in-memory queue), which no TCP client can prevent; RELP's acknowledgements cover it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from bridge.model import Event
from bridge.sinks.base import RetryableDeliveryError
from bridge.sinks.syslog import SyslogSink
from bridge.sinks.transport import TcpTransport
from tests.support.rsyslogd import Rsyslogd
from tests.support.waiting import wait_until
from tests.syslog.conftest import Certs, make_config, start_rsyslogd, wait_records
from tests.syslog.events import event

BURST = 20
HANG = 3.0  # seconds: three times the age limit below
AGE_LIMIT = 1.0


class Worker:
    """The outbox worker's part: retry a failed batch, after `close()`, until delivered."""

    def __init__(self, sink: SyslogSink) -> None:
        self.sink = sink
        self.sent: list[str] = []
        self.failures = 0
        self.widest = 0  # the largest receive window any receiver advertised to us

    async def burst(self, label: str) -> list[str]:
        batch = [event(title=f"{label} {len(self.sent) + i}") for i in range(BURST)]
        self.sent.extend(e.id for e in batch)
        await self.deliver(batch)
        return [e.id for e in batch]

    async def deliver(self, batch: list[Event]) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                await self.sink.send(batch)
                break
            except RetryableDeliveryError:
                assert time.monotonic() < deadline, "a batch was never delivered"
                self.failures += 1
                await self.sink.close()
                await asyncio.sleep(0.05)  # the worker's backoff
        transport = self.sink.transport
        assert isinstance(transport, TcpTransport)
        self.widest = max(self.widest, transport.peer_window)

    async def bursts_for(self, seconds: float, label: str) -> list[str]:
        """Bursts every quarter second for `seconds` (the time is the scenario, not a wait)."""
        ids: list[str] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ids += await self.burst(label)
            await asyncio.sleep(0.25)
        return ids


def bytes_per_event(sink: SyslogSink) -> int:
    chunks, _ = sink.frame([event() for _ in range(BURST)])
    return len(b"".join(chunks)) // BURST


async def judge(daemon: Rsyslogd, worker: Worker, protocol: str, *,
                maybe_unread: list[str]) -> Counter[str]:
    """Nothing lost; copies beyond the first only of `maybe_unread` (what was written since
    the receiver last read, and what its socket buffer may still have held), one per loss."""
    try:
        received = await wait_records(daemon, protocol, worker.sent, timeout=60)
    except AssertionError as exc:
        log = daemon.logfile.read_text(errors="replace")[-2000:]
        raise AssertionError(f"{exc}\n{worker.failures} failed sends; rsyslogd said:\n{log}") \
            from exc
    copies = Counter({i: len(records) for i, records in received.items()})
    duplicated = {i for i, n in copies.items() if n > 1}
    assert duplicated <= set(maybe_unread), sorted(duplicated - set(maybe_unread))[:5]
    return copies


def tail(ids: list[str], worker: Worker, sink: SyslogSink) -> list[str]:
    """The newest ids whose bytes fit what a receiver's socket buffer can hold (twice the
    widest window it advertised), plus a burst: acknowledged, but perhaps never read."""
    fits = 2 * worker.widest // bytes_per_event(sink) + 2 * BURST
    return ids[-fits:]


@pytest.mark.parametrize("protocol", ["tcp", "tls"])
async def test_a_hang_longer_than_the_old_window_then_a_kill_loses_nothing(
        certs: Certs, tmp_path: Path, protocol: str) -> None:
    daemon = start_rsyslogd(tmp_path / "rsyslog", certs)
    try:
        sink = make_config(daemon, certs, protocol, batch_size=BURST, write_timeout=2.0,
                           connect_timeout=1.0, resend_window_seconds=AGE_LIMIT).build()
        worker = Worker(sink)
        before = [i for _ in range(10) for i in await worker.burst("before")]
        await wait_records(daemon, protocol, before)  # written: nothing in rsyslogd's memory
        daemon.pause()
        hung = await worker.bursts_for(HANG, "hung")
        await asyncio.to_thread(daemon.kill)
        await asyncio.to_thread(daemon.start)
        after = await worker.bursts_for(0.5, "after")
        await sink.close()
        copies = await judge(daemon, worker, protocol,
                             maybe_unread=tail(before, worker, sink) + hung)
        assert len(hung) >= 8 * BURST  # the hang saw bursts, not a moment
        assert all(copies[i] == 1 for i in after)
        assert max(copies.values()) <= 2  # one loss, at most one extra copy
    finally:
        daemon.stop()


@pytest.mark.parametrize("protocol", ["tcp", "tls"])
async def test_a_receiver_that_hangs_twice_with_a_quiet_gap_loses_nothing(
        certs: Certs, tmp_path: Path, protocol: str) -> None:
    """Issue 20, case 2: burst A into a hung receiver, killed and restarted, hung again; after
    a quiet gap longer than the old age limit burst B comes, the sink reconnects and writes A
    (again) and B into it; it is killed; the next connection must carry both. (Over TLS a hung
    receiver cannot finish a handshake: B waits, failing, until the receiver is back.)"""
    daemon = start_rsyslogd(tmp_path / "rsyslog", certs)
    try:
        sink = make_config(daemon, certs, protocol, batch_size=BURST, write_timeout=2.0,
                           connect_timeout=1.0, resend_window_seconds=AGE_LIMIT).build()
        worker = Worker(sink)
        before = [i for _ in range(5) for i in await worker.burst("before")]
        await wait_records(daemon, protocol, before)
        daemon.pause()
        burst_a = [i for _ in range(4) for i in await worker.burst("A")]
        await asyncio.to_thread(daemon.kill)
        await asyncio.to_thread(daemon.start)
        daemon.pause()
        await asyncio.sleep(AGE_LIMIT * 1.5)  # the quiet gap is the scenario, not a wait
        failed = worker.failures
        sending_b = asyncio.create_task(worker.burst("B"))
        await wait_until(lambda: sending_b.done() or worker.failures > failed, 30,
                         "burst B written into the hung receiver, or refused by it")
        assert sending_b.done() == (protocol == "tcp")
        await asyncio.to_thread(daemon.kill)
        await asyncio.to_thread(daemon.start)
        burst_b = await sending_b
        burst_c = await worker.burst("C")
        await sink.close()
        copies = await judge(daemon, worker, protocol,
                             maybe_unread=tail(before, worker, sink) + burst_a + burst_b)
        assert all(copies[i] == 1 for i in burst_c)
        assert max(copies.values()) <= 3  # two losses, at most one extra copy each
    finally:
        daemon.stop()
