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


async def test_a_reset_connection_is_replaced_and_the_last_batch_resent() -> None:
    transport = TcpTransport("127.0.0.1", 0, connect_grace=0)
    async with StreamReceiver() as receiver:
        transport.port = receiver.port
        await transport.send([b"first ", b"batch;"])
        await wait_until(lambda: receiver.received() == 12, 5, "first batch read")
        await receiver.hang_up(reset=True)
        await transport.send([b"second;"])
        await wait_until(lambda: len(receiver.connections) == 2
                         and bytes(receiver.connections[1]).endswith(b"second;"), 5)
        # Nothing was learnt about the first batch after it was written: it is sent again.
        assert bytes(receiver.connections[1]) == b"first batch;second;"
        await transport.close()


async def test_a_receiver_that_hung_up_politely_read_everything_it_acknowledged() -> None:
    """A FIN, not a RST: a receiver closing with unread bytes would have reset the connection,
    so what its TCP acknowledged was read, and nothing is sent twice."""
    transport = TcpTransport("127.0.0.1", 0, connect_grace=0)
    async with StreamReceiver() as receiver:
        transport.port = receiver.port
        await transport.send([b"first ", b"batch;"])
        await wait_until(lambda: receiver.received() == 12, 5, "first batch read")
        await receiver.hang_up(reset=False)
        await transport.send([b"second;"])
        await wait_until(lambda: len(receiver.connections) == 2
                         and bytes(receiver.connections[1]) == b"second;", 5)
        assert bytes(receiver.connections[0]) == b"first batch;"
        await transport.close()


def batches(n: int, size: int, tag: bytes) -> list[bytes]:
    return [tag + b"%03d:" % i + b"x" * (size - len(tag) - 4) for i in range(n)]


async def test_every_byte_a_stalled_receiver_did_not_read_is_kept_and_resent() -> None:
    """The receiver stops reading (its socket buffer fills, acknowledged, then our send queue,
    not acknowledged); it dies; everything it never read comes again on the next connection,
    whatever the age limit says (it applies only where the kernel cannot tell)."""
    transport = TcpTransport("127.0.0.1", 0, connect_grace=0, resend_window_seconds=0.001)
    async with StreamReceiver("never_read", rcvbuf=32 * 1024) as receiver:
        transport.port = receiver.port
        stalled = batches(12, 8000, b"A")
        for batch in stalled:
            await transport.send([batch])
        assert transport.kept == sum(map(len, stalled))  # none of it was read
        await wait_until(lambda: len(receiver.connections) == 1, 5, "the receiver's accept")
        await receiver.hang_up(reset=True)
        receiver.mode = "read"
        await transport.send([b"B;"])
        expected = b"".join(stalled) + b"B;"
        await wait_until(lambda: len(receiver.connections) == 2
                         and len(receiver.connections[1]) == len(expected), 5, "the resend")
        assert bytes(receiver.connections[1]) == expected
        await transport.close()


async def test_a_receiver_that_hangs_twice_gets_both_bursts() -> None:
    """Issue 20, case 2: burst A into a hung receiver, which dies; A is resent into a receiver
    that hangs again, then burst B; it dies too; the third connection gets A and B."""
    transport = TcpTransport("127.0.0.1", 0, connect_grace=0, resend_window_seconds=0.001)
    async with StreamReceiver("never_read", rcvbuf=32 * 1024) as receiver:
        transport.port = receiver.port
        burst_a, burst_b = batches(6, 6000, b"A"), batches(3, 6000, b"B")
        for batch in burst_a:
            await transport.send([batch])
        await wait_until(lambda: len(receiver.connections) == 1, 5, "the receiver's accept")
        await receiver.hang_up(reset=True)
        for batch in burst_b:  # the first one goes out behind the resend of A
            await transport.send([batch])
        await wait_until(lambda: len(receiver.connections) == 2, 5, "the receiver's accept")
        await receiver.hang_up(reset=True)
        receiver.mode = "read"
        await transport.send([b"C;"])
        expected = b"".join([*burst_a, *burst_b, b"C;"])
        await wait_until(lambda: len(receiver.connections) == 3
                         and len(receiver.connections[2]) == len(expected), 5, "the resend")
        assert bytes(receiver.connections[2]) == expected
        await transport.close()


async def test_what_a_reading_receiver_acknowledged_is_not_kept_for_ever() -> None:
    """Duplicates stay bounded by what was in flight: what the receiver's TCP acknowledged
    is kept only as far as its socket buffer could still hold it unread."""
    transport = TcpTransport("127.0.0.1", 0, connect_grace=0)
    async with StreamReceiver() as receiver:
        transport.port = receiver.port
        sent = batches(50, 20_000, b"R")
        for n, batch in enumerate(sent, 1):
            await transport.send([batch])
            await wait_until(lambda n=n: receiver.received() == 20_000 * n, 5, "batch read")
        # Kept: what its socket buffer could hold (twice its widest window, in whole batches)
        # and the batch written since the last look, not the million bytes sent.
        kept = transport.kept
        assert 20_000 <= kept <= 2 * transport.peer_window + 2 * 20_000 < len(b"".join(sent)) // 2
        await receiver.hang_up(reset=True)
        await transport.send([b"after;"])
        await wait_until(lambda: len(receiver.connections) == 2
                         and bytes(receiver.connections[1]).endswith(b"after;"), 5)
        assert bytes(receiver.connections[1]) == b"".join(sent)[-kept:] + b"after;"
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


def test_the_window_drops_only_what_was_acknowledged_and_read() -> None:
    window = ResendWindow(max_bytes=1000, max_age=5.0)
    for end, chunk in ((4, b"aaaa"), (8, b"bbbb"), (12, b"cccc")):
        window.written(chunk, end)
    window.acknowledged(acked=7, unread=0)  # b"bbbb" is not wholly acknowledged
    assert window.data() == [b"bbbb", b"cccc"] and len(window) == 8
    window.written(b"dd", 14)
    window.acknowledged(acked=14, unread=4)  # acknowledged, but the last 4 may be unread
    assert window.data() == [b"cccc", b"dd"]
    capped = ResendWindow(max_bytes=0, max_age=5.0)  # no acknowledged bytes kept: unread or not
    capped.written(b"abc", 3)
    capped.acknowledged(acked=3, unread=3)
    assert capped.data() == []


def test_a_lost_window_is_resent_under_the_new_connections_count() -> None:
    window = ResendWindow(max_bytes=1000, max_age=5.0)
    window.written(b"A" * 10, 110)  # offsets of the first connection
    assert window.lost() == [b"A" * 10] and len(window) == 0
    window.written(b"A" * 10, 10)  # written again, first thing, on the next one
    window.written(b"B" * 5, 15)
    window.acknowledged(acked=12, unread=0)  # 110 means nothing here any more
    assert window.data() == [b"B" * 5]


def test_without_the_kernel_a_resent_chunk_counts_as_new(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback (no SIOCOUTQ) keeps the newest bytes and seconds; a resent chunk is as new
    as its resend, so a later burst does not evict it (the bug in issue 20, case 2)."""
    now = [100.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    monkeypatch.setattr("bridge.sinks.transport.time.monotonic", clock)
    window = ResendWindow(max_bytes=10, max_age=5.0)
    for n, chunk in enumerate((b"aaaa", b"bbbb", b"cccc")):
        window.written(chunk, 4 * (n + 1))
    window.age_out()
    assert window.data() == [b"bbbb", b"cccc"]
    resend = window.lost()
    now[0] += 12  # a long quiet gap, then a reconnect: the resend is written again
    for n, chunk in enumerate([*resend, b"ddd"]):
        window.written(chunk, 4 * (n + 1))
    window.age_out()
    assert window.data() == [b"cccc", b"ddd"]  # the bytes cap, not the age, evicted b"bbbb"
    now[0] += 6
    window.written(b"e", 11)
    window.age_out()
    assert window.data() == [b"e"]


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
