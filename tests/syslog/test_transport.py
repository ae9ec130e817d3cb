"""Transports against scripted receivers: dead peers are noticed before success is claimed,
the resend window covers what a vanished receiver may not have read, nothing blocks forever."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bridge.model import Event
from bridge.sinks.base import PermanentDeliveryError, RetryableDeliveryError
from bridge.sinks.syslog import SyslogSinkConfig
from bridge.sinks.transport import ResendWindow, TcpTransport, TransportError, UdpTransport
from tests.support.rsyslogd import free_port
from tests.support.waiting import wait_until
from tests.syslog.events import event
from tests.syslog.receivers import StreamReceiver


def tcp_sink(port: int, **overrides: object) -> object:
    settings = {"name": "s", "type": "syslog", "host": "127.0.0.1", "port": port,
                "connect_grace": 0.0, **overrides}
    return SyslogSinkConfig.model_validate(settings).build()


async def test_a_refused_connection_is_retryable() -> None:
    sink = tcp_sink(free_port())
    with pytest.raises(RetryableDeliveryError, match=r"cannot connect to 127\.0\.0\.1:\d+"):
        await sink.send([event()])  # type: ignore[attr-defined]


async def test_a_receiver_that_hangs_up_at_once_is_caught_before_writing() -> None:
    async with StreamReceiver("close_at_once") as receiver:
        sink = tcp_sink(receiver.port, connect_grace=5.0)
        started = time.monotonic()
        with pytest.raises(RetryableDeliveryError, match="hung up right after we connected"):
            await sink.send([event()])  # type: ignore[attr-defined]
        assert time.monotonic() - started < 4.0  # the hang-up ends the wait, not the grace
        assert receiver.received() == 0


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_a_lost_connection_is_replaced_and_the_window_resent(reset: bool) -> None:
    transport = TcpTransport("127.0.0.1", 0, connect_grace=0)
    async with StreamReceiver() as receiver:
        transport.port = receiver.port
        await transport.send([b"first ", b"batch;"])
        await wait_until(lambda: receiver.received() == 12, 5, "first batch read")
        await receiver.hang_up(reset=reset)
        await transport.send([b"second;"])
        await wait_until(lambda: len(receiver.connections) == 2
                         and bytes(receiver.connections[1]).endswith(b"second;"), 5)
        # The receiver may not have read the first batch before it went away: sent again.
        assert bytes(receiver.connections[1]) == b"first batch;second;"
        await transport.close()


async def test_a_polite_close_resends_nothing() -> None:
    transport = TcpTransport("127.0.0.1", 0, connect_grace=0)
    async with StreamReceiver() as receiver:
        transport.port = receiver.port
        await transport.send([b"one;"])
        await transport.close()
        await transport.send([b"two;"])
        await wait_until(lambda: len(receiver.connections) == 2
                         and bytes(receiver.connections[1]) == b"two;", 5)
        assert bytes(receiver.connections[0]) == b"one;"
        await transport.close()


async def test_a_receiver_that_stops_reading_times_out_instead_of_blocking() -> None:
    async with StreamReceiver("never_read", rcvbuf=4096) as receiver:
        transport = TcpTransport("127.0.0.1", receiver.port, connect_grace=0, write_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TransportError, match="timed out"):
            await transport.send([b"x" * 50_000_000])
        assert time.monotonic() - started < 5
        assert not transport.connected  # a cut frame: the stream is never reused


async def test_udp_reports_a_receiver_known_to_be_down() -> None:
    transport = UdpTransport("127.0.0.1", free_port())
    await transport.send([b"<14>1 - - - - - - lost"])  # UDP cannot know yet
    with pytest.raises(TransportError, match="refused"):  # the ICMP answer is remembered
        await transport.send([b"<14>1 - - - - - - second"])
    await transport.close()


def test_resend_window_keeps_the_newest_within_bytes_and_age(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    monkeypatch.setattr("bridge.sinks.transport.time.monotonic", clock)
    window = ResendWindow(max_bytes=10, max_age=5.0)
    for chunk in (b"aaaa", b"bbbb", b"cccc"):
        window.add(chunk)
    assert window.data() == [b"bbbb", b"cccc"] and len(window) == 8
    now[0] += 6
    window.add(b"dd")
    assert window.data() == [b"dd"]
    window.add(b"x" * 50)  # a batch bigger than the window is still kept whole
    assert window.data() == [b"x" * 50]
    disabled = ResendWindow(max_bytes=0, max_age=5.0)
    disabled.add(b"abc")
    assert disabled.data() == []


async def test_an_unencodable_event_is_rejected_alone() -> None:
    async with StreamReceiver() as receiver:
        good = [event(), event()]
        bad = event(title="lone surrogate \ud800")
        for fmt in ("cef", "leef", "json"):
            sink = tcp_sink(receiver.port, format=fmt)
            with pytest.raises(PermanentDeliveryError) as caught:
                await sink.send([good[0], bad, good[1]])  # type: ignore[attr-defined]
            assert caught.value.event_ids == (bad.id,)
            assert bad.id in str(caught.value)
            await sink.close()  # type: ignore[attr-defined]

        def delivered(e: Event) -> int:
            return sum(bytes(c).count(e.id.encode()) for c in receiver.connections)

        await wait_until(lambda: all(delivered(e) == 3 for e in good), 5, "good events")
        assert delivered(bad) == 0
