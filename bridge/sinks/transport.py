"""Byte transports for stream and datagram sinks: they move bytes and say whether that worked.

The guarantee on TCP and TLS: `send()` returns once every byte was handed to the kernel on a
connection that was still open right after the write (no FIN, RST or TLS alert had arrived, and
asyncio holds no unsent buffer: we write through `sock_sendall`, not a buffering transport).
That is not arrival. Until the receiver has the bytes, the transport keeps them (the *resend
window*) and writes them again, first thing, on the next connection after the receiver went
away. What "has" means, on Linux, comes from the kernel:

- `ioctl(SIOCOUTQ)` counts the bytes of the send queue the receiver's TCP has not acknowledged:
  every chunk that is not wholly acknowledged is kept, however long the receiver hangs;
- acknowledged is not read: the receiver's kernel acknowledges what lands in its socket buffer,
  and a receiver that dies loses that buffer. How much of it is unread cannot be told from
  here (a receiver's advertised window grows as data arrives, which hides the backlog behind
  it), but the buffer itself is bounded: a kernel advertises at least half its free space, so
  it holds at most about twice the largest window this receiver advertised (TCP_INFO
  `tcpi_snd_wnd`). The newest acknowledged bytes within that bound are kept too, up to
  `resend_window_bytes` (that many where the kernel does not report the window);
- a receiver that closed politely (FIN) read everything its TCP acknowledged: a socket closed
  with unread data sends RST instead, so after a FIN only the unacknowledged part is resent.

The numbers are read before each write (the receiver had time to take what came before) and
trusted only on an established connection (after a reset the kernel empties the queue). Chunks
are the batches the sink hands over, so a resend starts at a frame boundary, and a chunk written
again on a new connection is kept under that connection's byte count: nothing is evicted that
the receiver has not acknowledged. Duplicates are therefore bounded by what was in flight
(unacknowledged, or in the receiver's socket buffer by the bound above); loss needs a receiver
whose buffer outgrew that bound or `resend_window_bytes`, or a host that vanished with its
kernel. For TLS the counts are ciphertext: each chunk records the ciphertext bytes written up
to its end, a conservative map (a chunk counts only when its last record is acknowledged).
Where the kernel cannot tell (not Linux) the window keeps the newest `resend_window_bytes`
written within `resend_window_seconds` of the newest write. What is kept lives in memory: a
restart of the daemon while the receiver hangs forgets it.

The one loss no TCP client can prevent is the receiver reading bytes (its kernel acknowledged
them, its window reopened) and dying before it stored them; RELP (`bridge.sinks.relp`)
acknowledges per message and closes it.

Backoff between failed attempts belongs to the outbox worker: a failure here raises
`TransportError` at once, and the next `send()` reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import ssl
import struct
import termios
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

_TLS_CHUNK = 256 * 1024  # plaintext per SSL write: bounds the encrypted copy held in memory
_SIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)  # Linux: SIOCOUTQ == TIOCOUTQ
_TCP_ESTABLISHED, _TCP_CLOSE_WAIT = 1, 8  # tcpi_state values (linux/tcp_states.h)
_TCPI_SND_WND = 228  # offset of tcpi_snd_wnd in struct tcp_info (Linux >= 5.4)
UNREAD_FACTOR = 2


class TransportError(Exception):
    """Moving bytes failed and a retry may work. The message names host:port, never secrets."""


def describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class TcpProgress:
    """What the kernel says about one connection's sending side."""

    state: int
    unacknowledged: int  # bytes of the send queue the peer's TCP has not acknowledged
    window: int | None  # the peer's advertised receive window, when the kernel reports it


def tcp_progress(sock: socket.socket) -> TcpProgress | None:
    """SIOCOUTQ and TCP_INFO for `sock`; None where the kernel does not offer them."""
    if not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0" * 4))[0]
    except OSError:
        return None
    window = None
    if len(info) >= _TCPI_SND_WND + 4:
        window = struct.unpack_from("I", info, _TCPI_SND_WND)[0]
    return TcpProgress(info[0], queued, window)


class _Chunk:
    __slots__ = ("at", "data", "end")

    def __init__(self, data: bytes, end: int, at: float) -> None:
        self.data = data
        self.end = end  # the connection's byte count at its last byte
        self.at = at


class ResendWindow:
    """The chunks the receiver may not have, oldest first.

    Each chunk knows where it ends in the current connection's byte stream. `acknowledged`
    drops the ones the receiver has (see the module docstring); `lost` hands every chunk over
    for a resend; `written` records a chunk (again, after a loss) under the new connection's
    count. Without the kernel's numbers,
    `age_out` keeps the newest `max_bytes` written within `max_age` seconds of the newest
    write (a resent chunk counts as new).
    """

    def __init__(self, max_bytes: int, max_age: float) -> None:
        self.max_bytes = max_bytes  # acknowledged bytes kept at most (0: none, nor a fallback)
        self.max_age = max_age
        self._chunks: deque[_Chunk] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def data(self) -> list[bytes]:
        return [chunk.data for chunk in self._chunks]

    def written(self, data: bytes, end: int) -> None:
        if data:
            self._chunks.append(_Chunk(data, end, time.monotonic()))
            self._size += len(data)

    def acknowledged(self, acked: int, unread: int) -> None:
        """The receiver's TCP acknowledged the connection's first `acked` bytes, and may not
        have read the last `unread` of them: drop the chunks that end before."""
        have = acked - min(unread, self.max_bytes)
        while self._chunks and self._chunks[0].end <= have:
            self._size -= len(self._chunks.popleft().data)

    def age_out(self) -> None:
        """No acknowledgement to go by: the newest bytes and seconds only."""
        if not self._chunks:
            return
        newest = self._chunks[-1].at
        while self._chunks and (self._size > self.max_bytes
                                or newest - self._chunks[0].at > self.max_age):
            self._size -= len(self._chunks.popleft().data)

    def lost(self) -> list[bytes]:
        """The connection is gone: everything kept is to be written again on the next one."""
        kept = self.data()
        self._chunks.clear()
        self._size = 0
        return kept


class TcpTransport:
    """One TCP connection, plain or TLS, written in whole batches.

    TLS runs over memory BIOs so that we, not a buffering transport, decide when bytes count as
    written, and count the ciphertext each chunk became. `connect_grace` waits briefly after
    connecting for the receiver to hang up on us: rsyslog and syslog-ng reject an unacceptable
    client certificate or sender by closing right after the handshake, not by failing it, so
    the first batch would otherwise vanish.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float = 10.0,
        write_timeout: float = 30.0,
        connect_grace: float = 0.2,
        resend_window_bytes: int = 8 * 1024 * 1024,
        resend_window_seconds: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self._ctx = ssl_context
        self._server_hostname = server_hostname or host
        self._connect_timeout = connect_timeout
        self._write_timeout = write_timeout
        self._grace = connect_grace
        self._window = ResendWindow(resend_window_bytes, resend_window_seconds)
        self._resend: list[bytes] = []  # from connections that were lost, oldest first
        self._sock: socket.socket | None = None
        self._sent = 0  # bytes handed to the current socket (ciphertext on TLS)
        self._widest = 0  # the largest window the current peer advertised
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def peer_window(self) -> int:
        """The largest receive window the current receiver advertised (0: not known)."""
        return self._widest

    @property
    def kept(self) -> int:
        """Bytes held for a resend: the window and what lost connections left."""
        return len(self._window) + sum(map(len, self._resend))

    async def connect(self) -> None:
        """Connect unless connected; raises `TransportError`."""
        if self._sock is not None:
            gone = self._peer_gone()
            if gone is None:
                return
            self._lost(gone)
        loop = asyncio.get_running_loop()
        self._sent, self._widest = 0, 0
        try:
            async with asyncio.timeout(self._connect_timeout):
                sock = await self._open_socket(loop)
                try:
                    if self._ctx is not None:
                        await self._handshake(loop, sock, self._ctx)
                    await self._settle(loop, sock)
                except BaseException:
                    sock.close()
                    self._tls = None
                    raise
        except TransportError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise TransportError(f"cannot connect to {self.target}: {describe(exc)} (check "
                                 "ca_bundle and server_name)") from None
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise TransportError(f"cannot connect to {self.target}: {describe(exc)}") from None
        self._sock = sock
        log.info("transport_connected", target=self.target, tls=self._ctx is not None)

    async def _open_socket(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"no address for {self.host}")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if hasattr(socket, "TCP_KEEPIDLE"):  # notice a silently dead receiver within ~2 min
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
            return sock
        raise error

    async def _sendall(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                       data: bytes | bytearray | memoryview) -> None:
        await loop.sock_sendall(sock, data)
        self._sent += len(data)

    async def _handshake(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, ctx: ssl.SSLContext
    ) -> None:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(self._incoming, self._outgoing, server_hostname=self._server_hostname)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            if pending := self._outgoing.read():
                await self._sendall(loop, sock, pending)
            data = await loop.sock_recv(sock, 65536)
            if not data:
                raise TransportError(
                    f"cannot connect to {self.target}: the receiver closed the connection during "
                    "the TLS handshake (does it expect TLS, and our client certificate?)")
            self._incoming.write(data)
        if pending := self._outgoing.read():
            await self._sendall(loop, sock, pending)
        self._tls = tls

    async def _settle(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        deadline = loop.time() + self._grace
        while (remaining := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), remaining)
            except TimeoutError:
                return
            gone = "closed" if not data else self._absorb(data)
            if gone is not None:
                hint = " (did it reject our client certificate?)" if self._ctx else ""
                raise TransportError(
                    f"cannot connect to {self.target}: the receiver hung up right after we "
                    f"connected{hint}: {gone}")

    def _absorb(self, data: bytes) -> str | None:
        """Feed bytes the receiver sent (TLS tickets, alerts); syslog receivers send no data."""
        if self._tls is None:
            return None
        self._incoming.write(data)
        try:
            while self._tls.read(65536):
                pass
        except ssl.SSLWantReadError:
            return None
        except ssl.SSLZeroReturnError:
            return "the receiver ended the TLS session"
        except ssl.SSLError as exc:
            return describe(exc)
        return None

    def _peer_gone(self) -> str | None:
        """Why the connection is unusable, or None: a non-blocking look at what arrived."""
        sock = self._sock
        if sock is None:
            return "not connected"
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    self._observe(closed_politely=True)
                    return "the receiver closed the connection"
                if (gone := self._absorb(data)) is not None:
                    return gone
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            return describe(exc)

    def _observe(self, *, closed_politely: bool = False) -> None:
        """Drop from the window what the receiver has, by the kernel's account (see the module
        docstring); without one, keep the newest bytes and seconds."""
        sock = self._sock
        progress = tcp_progress(sock) if sock is not None else None
        if progress is None:
            self._window.age_out()
            return
        acked = self._sent - progress.unacknowledged
        if progress.state == _TCP_CLOSE_WAIT and closed_politely:
            # It closed with nothing unread, or its kernel would have sent RST instead.
            self._window.acknowledged(acked, 0)
        elif progress.state == _TCP_ESTABLISHED:
            unread = self._window.max_bytes  # no window reported: assume the worst
            if progress.window is not None:
                self._widest = max(self._widest, progress.window)
                unread = UNREAD_FACTOR * self._widest
            self._window.acknowledged(acked, unread)
        # Otherwise reset or closing: the numbers no longer describe the receiver.

    def _lost(self, reason: str) -> None:
        """Drop a connection we did not choose to close: resend the window on the next one."""
        self._resend.extend(self._window.lost())
        log.warning("transport_connection_lost", target=self.target, reason=reason,
                    resend_bytes=self.kept)
        self._discard()

    def _discard(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._tls = None

    async def _write(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                     chunks: Sequence[bytes]) -> list[int]:
        """Write the chunks in order; the connection's byte count at the end of each."""
        ends: list[int] = []
        if self._tls is None:
            await self._sendall(loop, sock, b"".join(chunks))
            total = self._sent - sum(map(len, chunks))
            for chunk in chunks:
                total += len(chunk)
                ends.append(total)
            return ends
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = self._tls.write(view[:_TLS_CHUNK])
                view = view[written:]
                await self._sendall(loop, sock, self._outgoing.read())
            ends.append(self._sent)
        return ends

    async def send(self, chunks: Sequence[bytes]) -> None:
        """Write `chunks` in one go; raises `TransportError` if they may not have arrived."""
        await self.connect()
        sock = self._sock
        assert sock is not None
        self._observe()  # before writing: the receiver had time to take what came before
        data = b"".join(chunks)
        resend = self._resend
        payload = [*resend, data] if data else list(resend)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._write_timeout):
                ends = await self._write(loop, sock, payload)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._lost(describe(exc))
            raise TransportError(f"writing to {self.target} failed: {describe(exc)}") from None
        except BaseException:  # cancelled mid-write: a frame may be cut, never reuse the stream
            self._lost("write interrupted")
            raise
        if (gone := self._peer_gone()) is not None:  # the batch is retried, the resend kept
            self._lost(gone)
            raise TransportError(f"{self.target}: {gone} during the write")
        if resend:
            log.info("transport_resent", target=self.target,
                     resend_bytes=sum(map(len, resend)), chunks=len(resend))
        self._resend = []
        for chunk, end in zip(payload, ends, strict=True):
            self._window.written(chunk, end)

    async def close(self) -> None:
        """Close politely (TLS close_notify); a connection found dead keeps its resend due."""
        if self._sock is None:
            return
        if (gone := self._peer_gone()) is not None:
            self._lost(gone)
            return
        if self._tls is not None:
            with contextlib.suppress(ssl.SSLError, OSError):
                self._tls.unwrap()
        with contextlib.suppress(ssl.SSLError, OSError):
            if self._tls is not None and (pending := self._outgoing.read()):
                self._sock.send(pending)
        self._window.lost()  # closing by choice: the receiver gets our FIN after the data
        self._discard()


class UdpTransport:
    """Datagrams to one receiver (RFC 5426: one syslog message per datagram).

    UDP confirms nothing; what we can report is a local send failure, or the ICMP "port
    unreachable" the kernel remembers from an earlier datagram (the receiver is down).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.target = f"{host}:{port}"
        self._sock: socket.socket | None = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    async def connect(self) -> None:
        if self._sock is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                sock.connect(address)
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            raise TransportError(f"cannot reach {self.target}: {describe(exc)}") from None
        self._sock = sock

    async def send(self, datagrams: Sequence[bytes]) -> None:
        await self.connect()
        sock = self._sock
        assert sock is not None
        loop = asyncio.get_running_loop()
        try:
            for datagram in datagrams:
                try:
                    sock.send(datagram)
                except (BlockingIOError, InterruptedError):
                    await loop.sock_sendall(sock, datagram)
        except OSError as exc:
            await self.close()
            raise TransportError(f"sending to {self.target} failed: {describe(exc)}") from None

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
