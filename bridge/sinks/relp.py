"""A RELP client: syslog messages the receiver acknowledges one by one (rsyslog's `imrelp`).

RELP (the Reliable Event Logging Protocol, librelp's doc/relp.md) runs over one TCP (or TLS)
connection. Every frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`; the client numbers its
commands 1, 2, 3, ... (after 999,999,999 comes 1), and the server answers each with an `rsp`
frame of the same number, in order, whose data is `CODE [SP TEXT] [LF DATA]`: 200 is OK,
anything else an error. A session starts with `open` carrying offers (`relp_version`,
`relp_software`, `commands=syslog`) that the server answers with the offers it accepts; it ends
with `close`. A server about to close sends the hint `0 serverclose 0`.

`RelpClient.send` pipelines: up to `window` transactions are open (sent, not yet answered) at
once, which keeps throughput up over any latency, and it returns only when every message was
answered 200. When the session breaks, `RelpSendError.acknowledged` says how many of the
messages (a prefix: answers come in order) the receiver took; the rest were not acknowledged
and are for the caller to send again on a new session, so duplicates are bounded by the window:
only an open transaction can have been stored by a receiver that died before answering.

Nothing here retries or sleeps; a hostile receiver cannot make us buffer more than
`MAX_RESPONSE_BYTES` per frame or break the numbering unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from bridge.version import __version__

log = structlog.get_logger(__name__)

RELP_VERSION = 0  # what librelp speaks and offers; version 1 was never deployed
MAX_TXNR = 999_999_999
MAX_RESPONSE_BYTES = 64 * 1024  # an answer is a status line and a few offers
SOFTWARE = f"bridge,{__version__}"
_DIGITS = frozenset(b"0123456789")
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class RelpProtocolError(Exception):
    """The peer broke the protocol (framing, numbering, offers): the session cannot go on."""


@dataclass(frozen=True)
class Frame:
    txnr: int
    command: str
    data: bytes


def next_txnr(txnr: int) -> int:
    return 1 if txnr >= MAX_TXNR else txnr + 1


def encode(txnr: int, command: str, data: bytes = b"") -> bytes:
    """One frame; no SP and no DATA when DATALEN is 0 (as librelp writes and expects it)."""
    if data:
        return b"%d %s %d %s\n" % (txnr, command.encode("ascii"), len(data), data)
    return b"%d %s 0\n" % (txnr, command.encode("ascii"))


def _number(field: bytes, what: str) -> int:
    if not 1 <= len(field) <= 9 or not _DIGITS.issuperset(field):
        raise RelpProtocolError(f"bad {what} {field[:12]!r}")
    return int(field)


class FrameReader:
    """Frames out of a byte stream, however it is cut: `feed` returns the complete ones and
    keeps the rest; anything that cannot be a frame raises `RelpProtocolError`."""

    def __init__(self, max_data: int = MAX_RESPONSE_BYTES) -> None:
        self.max_data = max_data
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        start = 0
        while (frame := self._one(buffer, start)) is not None:
            frames.append(frame[0])
            start = frame[1]
        del buffer[:start]
        return frames

    def _one(self, buffer: bytearray, start: int) -> tuple[Frame, int] | None:
        """The frame at `start` and where the next begins, or None while it is incomplete."""
        size = len(buffer)
        first = _field_end(buffer, start, 9, "transaction number")
        if first is None:
            return None
        second = _field_end(buffer, first + 1, 32, "command")
        if second is None:
            return None
        txnr = _number(bytes(buffer[start:first]), "transaction number")
        command = bytes(buffer[first + 1:second])
        if not command.isalpha():
            raise RelpProtocolError(f"bad command {command[:32]!r}")
        digits = second + 1
        while digits < size and buffer[digits] in _DIGITS:
            digits += 1
        if digits - second - 1 > 9:
            raise RelpProtocolError("a data length of more than 9 digits")
        if digits == size:
            return None
        length = _number(bytes(buffer[second + 1:digits]), "data length")
        if length > self.max_data:
            raise RelpProtocolError(f"a {length}-byte frame (at most {self.max_data})")
        terminator = buffer[digits]
        if length == 0:
            if terminator != 0x0A:
                raise RelpProtocolError("no LF after a zero data length")
            return Frame(txnr, command.decode("ascii"), b""), digits + 1
        if terminator != 0x20:
            raise RelpProtocolError("no SP between the data length and the data")
        end = digits + 1 + length
        if size <= end:
            return None
        if buffer[end] != 0x0A:
            raise RelpProtocolError("a frame without its trailing LF")
        return Frame(txnr, command.decode("ascii"), bytes(buffer[digits + 1:end])), end + 1


def _field_end(buffer: bytearray, start: int, longest: int, what: str) -> int | None:
    """Where the SP ending a header field starting at `start` is; None while it may come."""
    space = buffer.find(b" ", start, start + longest + 1)
    if space == start:
        raise RelpProtocolError(f"an empty {what}")
    if space < 0:
        if len(buffer) - start > longest:
            raise RelpProtocolError(f"a {what} longer than {longest}")
        return None
    return space


def parse_response(data: bytes) -> tuple[int, str, bytes]:
    """`rsp` data: (code, human text, what follows the first LF)."""
    line, _, rest = data.partition(b"\n")
    code, _, text = line.partition(b" ")
    if len(code) != 3 or not _DIGITS.issuperset(code):
        raise RelpProtocolError(f"bad response code {code[:12]!r}")
    return int(code), text.decode("utf-8", "replace"), rest


def offers(software: str = SOFTWARE) -> bytes:
    return (f"relp_version={RELP_VERSION}\nrelp_software={software}\ncommands=syslog"
            .encode("ascii"))


def parse_offers(data: bytes) -> dict[str, tuple[str, ...]]:
    """`name=value,value` lines (values optional) as a mapping."""
    found: dict[str, tuple[str, ...]] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        name, _, values = line.partition("=")
        found[name] = tuple(v for v in values.split(",") if v) if values else ()
    return found


class RelpUnavailableError(Exception):
    """No session: refused, timed out, TLS failed, or the server declined our offers."""


class RelpSendError(Exception):
    """The session broke, or the receiver answered an error, after `acknowledged` messages
    (a prefix of those handed to `send`) were answered 200."""

    def __init__(self, message: str, acknowledged: int, *, rejected: bool = False) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged
        self.rejected = rejected  # the receiver answered, with an error: not an outage


class _Session(asyncio.Protocol):
    """One connection: frames are parsed as they arrive, hints taken at once, and why the
    session cannot go on is remembered (a closed connection, a serverclose, garbage)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._socket: Any = None
        self.frames = FrameReader()
        self.answers: deque[Frame] = deque()
        self.error: BaseException | None = None
        self._arrived = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._socket = transport.get_extra_info("socket")

    def data_received(self, data: bytes) -> None:
        self._ack_now()
        try:
            frames = self.frames.feed(data)
        except RelpProtocolError as exc:
            self._fail(exc)
            return
        for frame in frames:
            if frame.txnr != 0:
                self.answers.append(frame)
            elif frame.command == "serverclose":  # other hints are advisory: ignored
                self._fail(ConnectionResetError("the receiver closed the session (serverclose)"))
        self._arrived.set()

    def eof_received(self) -> bool:
        self._fail(ConnectionResetError("the receiver closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the connection was closed"))
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _ack_now(self) -> None:
        """Acknowledge the receiver's answers at once (Linux TCP_QUICKACK, which the kernel
        turns off again by itself). A receiver that writes its small answers with Nagle's
        algorithm on (librelp does) holds the next ones until our TCP acknowledges the last,
        and a delayed acknowledgement (40 ms) would then pace a whole batch."""
        if _QUICKACK is not None and self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._arrived.set()

    async def drain(self) -> None:
        """Wait while the kernel's buffers are full (the receiver is not reading)."""
        while not self._writable.is_set():
            await self._writable.wait()
        if self.error is not None:
            raise self.error

    async def next_answers(self) -> list[Frame]:
        """The answers that arrived (waiting for one); those before a failure come first."""
        while not self.answers:
            if self.error is not None:
                raise self.error
            self._arrived.clear()
            await self._arrived.wait()
        answers = list(self.answers)
        self.answers.clear()
        return answers

    def close(self, *, politely: bool = False) -> None:
        if self.transport is not None:
            if politely:
                self.transport.close()  # FIN after what is buffered (TLS: close_notify)
            else:
                self.transport.abort()


class RelpClient:
    """One RELP session at a time to one receiver, opened on demand."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float = 10.0,
        ack_timeout: float = 30.0,
        window: int = 1024,
    ) -> None:
        self.host = host
        self.port = port
        self._ctx = ssl_context
        self._server_hostname = server_hostname or host
        self._connect_timeout = connect_timeout
        self._ack_timeout = ack_timeout
        self.window = window
        self._session: _Session | None = None
        self._txnr = 0  # the last number used on this session
        self.server_software = ""

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._session is not None

    @property
    def session_open(self) -> bool:
        """A session is open and nothing said it ended (a serverclose, a closed connection)."""
        return self._session is not None and self._session.error is None

    async def connect(self) -> None:
        """Open a session unless one is open and still usable; raises `RelpUnavailableError`."""
        if self._session is not None:
            if self._session.error is None and not self._session.answers:
                return
            self._drop(_describe(self._session.error or RelpProtocolError("an unasked answer")))
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, session = await loop.create_connection(
                    _Session, self.host, self.port, ssl=self._ctx,
                    server_hostname=self._server_hostname if self._ctx else None)
                self._session, self._txnr = session, 0
                await self._open(session)
        except RelpUnavailableError:
            self._drop(None)
            raise
        except (OSError, TimeoutError, ssl.SSLError, RelpProtocolError) as exc:
            self._drop(None)
            raise RelpUnavailableError(f"cannot open a RELP session with {self.target}: "
                                       f"{_describe(exc)}") from None
        log.info("relp_session_opened", target=self.target, tls=self._ctx is not None,
                 server=self.server_software)

    async def _open(self, session: _Session) -> None:
        txnr = self._next()
        assert session.transport is not None
        session.transport.write(encode(txnr, "open", offers()))
        answer = await self._answer(session, txnr)
        code, text, rest = parse_response(answer.data)
        if code != 200:
            raise RelpUnavailableError(f"{self.target} refused the RELP session: {code} {text}")
        accepted = parse_offers(rest)
        if "relp_version" not in accepted:
            raise RelpProtocolError("the answer to open has no relp_version")
        if "syslog" not in accepted.get("commands", ()):
            raise RelpUnavailableError(f"{self.target} does not accept the RELP syslog command")
        self.server_software = ",".join(accepted.get("relp_software", ())[:2])

    @staticmethod
    async def _answer(session: _Session, txnr: int) -> Frame:
        (answer, *more) = await session.next_answers()
        if more or answer.command != "rsp" or answer.txnr != txnr:
            raise RelpProtocolError(f"expected the answer to {txnr}, got {answer.txnr} "
                                    f"{answer.command}")
        return answer

    def _next(self) -> int:
        self._txnr = next_txnr(self._txnr)
        return self._txnr

    async def send(self, messages: Sequence[bytes]) -> None:
        """Send each message as a `syslog` command; return once all are answered 200.

        Raises `RelpUnavailableError` when no session can be opened (nothing was sent), and
        `RelpSendError` naming how many were acknowledged when the session breaks, an answer
        is an error, or no answer comes within `ack_timeout` of the previous one."""
        await self.connect()
        session = self._session
        assert session is not None and session.transport is not None
        write = session.transport.write
        total, sent, acknowledged = len(messages), 0, 0
        open_txnrs: deque[int] = deque()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._ack_timeout) as deadline:
                while acknowledged < total:
                    if sent < total and len(open_txnrs) < self.window:
                        upto = min(total, sent + self.window - len(open_txnrs))
                        frames = []
                        for message in messages[sent:upto]:
                            txnr = self._next()
                            open_txnrs.append(txnr)
                            frames.append(encode(txnr, "syslog", message))
                        write(b"".join(frames))
                        sent = upto
                        await session.drain()
                    for answer in await session.next_answers():
                        expected = open_txnrs.popleft() if open_txnrs else None
                        if answer.command != "rsp" or answer.txnr != expected:
                            raise RelpProtocolError(f"expected the answer to {expected}, got "
                                                    f"{answer.txnr} {answer.command}")
                        code, text, _ = parse_response(answer.data)
                        if code != 200:
                            self._drop(f"answered {code}")
                            raise RelpSendError(
                                f"{self.target} answered {code} {text} to message "
                                f"{acknowledged + 1} of {total}", acknowledged, rejected=True)
                        acknowledged += 1
                    deadline.reschedule(loop.time() + self._ack_timeout)
        except (OSError, TimeoutError, ssl.SSLError, RelpProtocolError) as exc:
            self._drop(_describe(exc))
            raise RelpSendError(f"RELP session with {self.target} broke after {acknowledged} "
                                f"of {total} messages were acknowledged: {_describe(exc)}",
                                acknowledged) from None
        except RelpSendError:
            raise
        except BaseException:  # cancelled: answers may be on their way, never reuse the session
            self._drop("send interrupted")
            raise

    def _drop(self, reason: str | None, *, politely: bool = False) -> None:
        if reason is not None:
            log.warning("relp_session_lost", target=self.target, reason=reason)
        if self._session is not None:
            self._session.close(politely=politely)
        self._session = None

    async def close(self) -> None:
        """End the session politely (`close`, its answer), or just drop a broken one."""
        session = self._session
        if session is None:
            return
        if session.error is None and session.transport is not None:
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError, RelpProtocolError):
                async with asyncio.timeout(min(self._ack_timeout, 5.0)):
                    txnr = self._next()
                    session.transport.write(encode(txnr, "close"))
                    await self._answer(session, txnr)
        self._drop(None, politely=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
