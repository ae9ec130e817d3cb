"""The RELP sink against a scripted RELP server: what each kind of answer (or silence) means for
the outbox. The real `imrelp` is in test_rsyslog_relp.py; this server misbehaves on purpose.

It reads frames by the lengths they state and answers by a script: `answer` says what to send
back for each command (None: nothing, b"": hang up), `hold_until` how many transactions it lets
pile up before it answers them (to watch the client's window).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridge.sinks.base import DestinationUnavailableError, RetryableDeliveryError
from bridge.sinks.relp import RelpClient
from bridge.sinks.syslog import SyslogSink, SyslogSinkConfig
from tests.support.waiting import wait_until
from tests.syslog.events import event

OPEN_OK = b"200 OK\nrelp_version=0\nrelp_software=scripted,1\ncommands=syslog"
Answer = Callable[[int, str, int], bytes | None]  # (txnr, command, nth syslog) -> frame or None


def rsp(txnr: int, data: bytes) -> bytes:
    return b"%d rsp %d %s\n" % (txnr, len(data), data)


def polite(txnr: int, command: str, nth: int) -> bytes:
    if command == "open":
        return rsp(txnr, OPEN_OK)
    if command == "close":
        return b"%d rsp 0\n0 serverclose 0\n" % txnr
    return rsp(txnr, b"200 OK")


class ScriptedRelpServer:
    def __init__(self, answer: Answer = polite, hold_until: int = 0) -> None:
        self.answer = answer
        self.hold_until = hold_until  # syslog answers withheld until this many are unanswered
        self.received: list[bytes] = []  # syslog message data, every session
        self.most_unanswered = 0
        self.sessions = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> ScriptedRelpServer:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()

    async def close_sessions(self) -> None:
        """What imrelp does on shutdown: the serverclose hint, then the connection closed."""
        for writer in self._writers:
            writer.write(b"0 serverclose 0\n")
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        self._writers.append(writer)
        held: list[bytes] = []
        try:
            while frame := await read_frame(reader):
                txnr, name, data = frame
                if name == "syslog":
                    self.received.append(data)
                reply = self.answer(txnr, name, len(self.received))
                if reply == b"":  # the script says: hang up
                    writer.close()
                    return
                if name == "syslog" and self.hold_until:
                    held.append(reply or b"")
                    self.most_unanswered = max(self.most_unanswered, len(held))
                    if len(held) < self.hold_until:
                        continue
                    reply, held = b"".join(held), []
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            writer.close()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, str, bytes] | None:
    """`TXNR SP COMMAND SP DATALEN [SP DATA] LF`, read by the lengths it states."""
    if reader.at_eof():
        return None
    try:
        txnr = int(await reader.readuntil(b" "))
    except asyncio.IncompleteReadError:
        return None
    command = (await reader.readuntil(b" "))[:-1].decode()
    digits = b""
    while (c := await reader.readexactly(1)) not in b" \n":
        digits += c
    data = await reader.readexactly(int(digits)) if c == b" " else b""
    if c == b" ":
        await reader.readexactly(1)  # the trailing LF
    return txnr, command, data


def relp_sink(port: int, **overrides: Any) -> SyslogSink:
    return SyslogSinkConfig.model_validate({
        "type": "syslog", "name": "siem", "host": "127.0.0.1", "port": port, "protocol": "relp",
        "format": "json", "connect_timeout": 1, "write_timeout": 1, **overrides}).build()


@pytest.fixture
async def polite_server() -> AsyncIterator[ScriptedRelpServer]:
    async with ScriptedRelpServer() as server:
        yield server


async def test_a_batch_is_delivered_once_every_message_is_answered(
        polite_server: ScriptedRelpServer) -> None:
    sink = relp_sink(polite_server.port)
    events = [event() for _ in range(5)]
    await sink.send(events)
    await sink.close()
    assert all(e.id.encode() in m for e, m in zip(events, polite_server.received, strict=True))
    assert polite_server.sessions == 1


async def test_an_error_answer_spends_an_attempt_and_keeps_what_was_answered() -> None:
    def fifth_fails(txnr: int, command: str, nth: int) -> bytes | None:
        if command == "syslog" and nth == 5:
            return rsp(txnr, b"500 disk full")
        return polite(txnr, command, nth)

    async with ScriptedRelpServer(fifth_fails) as server:
        sink = relp_sink(server.port)
        events = [event() for _ in range(8)]
        with pytest.raises(RetryableDeliveryError, match="500 disk full") as caught:
            await sink.send(events)
        assert not isinstance(caught.value, DestinationUnavailableError)
        assert caught.value.delivered == tuple(e.id for e in events[:4])
        await sink.close()


@pytest.mark.parametrize(("misbehaviour", "reason"), [
    ("wrong_number", "expected the answer to"),
    ("serverclose", "serverclose"),
    ("hang_up", "closed the connection"),
    ("garbage", "bad transaction number"),
])
async def test_a_broken_session_is_an_outage_and_reports_what_was_answered(
        misbehaviour: str, reason: str) -> None:
    def third_breaks(txnr: int, command: str, nth: int) -> bytes | None:
        if command != "syslog" or nth < 3:
            return polite(txnr, command, nth)
        return {"wrong_number": rsp(txnr + 7, b"200 OK"),
                "serverclose": b"0 serverclose 0\n",
                "hang_up": b"",
                "garbage": b"HTTP/1.1 400 Bad Request\r\n\r\n"}[misbehaviour]

    async with ScriptedRelpServer(third_breaks) as server:
        sink = relp_sink(server.port, relp_window=1)  # one at a time: the prefix is exact
        events = [event() for _ in range(5)]
        with pytest.raises(DestinationUnavailableError, match=reason) as caught:
            await sink.send(events)
        assert caught.value.delivered == (events[0].id, events[1].id)
        await sink.close()


async def test_a_receiver_that_never_answers_is_an_outage_within_the_timeout() -> None:
    def silent(txnr: int, command: str, nth: int) -> bytes | None:
        return polite(txnr, command, nth) if command == "open" else None

    async with ScriptedRelpServer(silent) as server:
        sink = relp_sink(server.port, write_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(DestinationUnavailableError, match="no answer in time") as caught:
            await sink.send([event(), event()])
        assert time.monotonic() - started < 3
        assert caught.value.delivered == ()
        await sink.close()


@pytest.mark.parametrize(("answer", "reason"), [
    (rsp(1, b"500 required command not supported by client"), "refused the RELP session"),
    (rsp(1, b"200 OK\nrelp_version=0\ncommands=eventlog"), "does not accept the RELP syslog"),
    (rsp(1, b"200 OK\ncommands=syslog"), "no relp_version"),
])
async def test_a_session_the_receiver_does_not_open_is_an_outage(answer: bytes,
                                                                reason: str) -> None:
    async with ScriptedRelpServer(lambda txnr, command, nth: answer) as server:
        sink = relp_sink(server.port)
        with pytest.raises(DestinationUnavailableError, match=reason):
            await sink.send([event()])
        assert server.received == []
        await sink.close()


async def test_the_window_of_open_transactions_is_used_and_never_exceeded() -> None:
    async with ScriptedRelpServer(hold_until=10) as server:  # answers in tens
        sink = relp_sink(server.port, relp_window=10)
        await sink.send([event() for _ in range(30)])
        await sink.close()
        assert len(server.received) == 30 and server.most_unanswered == 10
    async with ScriptedRelpServer(hold_until=11) as server:  # waits for an eleventh
        sink = relp_sink(server.port, relp_window=10, write_timeout=0.5)
        with pytest.raises(DestinationUnavailableError, match="no answer in time"):
            await sink.send([event() for _ in range(30)])
        await sink.close()
        assert len(server.received) == 10  # which never came: ten were open, no more


async def test_a_session_the_receiver_closed_while_idle_is_replaced(
        polite_server: ScriptedRelpServer) -> None:
    sink = relp_sink(polite_server.port)
    client = sink.transport
    assert isinstance(client, RelpClient)
    await sink.send([event()])
    await polite_server.close_sessions()
    await wait_until(lambda: not client.session_open, 5, "the client saw the serverclose")
    await sink.send([event()])  # a new session, nothing lost, no error
    assert polite_server.sessions == 2 and len(polite_server.received) == 2
    await sink.close()
