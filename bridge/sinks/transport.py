"""Byte transports for stream and datagram sinks: they move bytes and say whether that worked.

The guarantee on TCP and TLS: `send()` returns once every byte was handed to the kernel on a
connection that was still open right after the write (no FIN, RST or TLS alert had arrived, and
asyncio holds no unsent buffer: we write through `sock_sendall`, not a buffering transport).
TCP cannot promise more than that: a receiver may still die with our last bytes unread in its
socket buffer, which its kernel then discards. To close that gap in the common case, a receiver
restart, the transport keeps what it wrote during the last moments (the *resend window*) and
writes it again, first thing, on the next connection after the receiver went away. Delivery is
therefore at-least-once: duplicates are possible (every event carries its id), loss needs a
receiver that vanished with more than the window unread or a host that died silently.

Backoff between failed attempts belongs to the outbox worker: a failure here raises
`TransportError` at once, and the next `send()` reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence

import structlog

log = structlog.get_logger(__name__)

_TLS_CHUNK = 256 * 1024  # plaintext per SSL write: bounds the encrypted copy held in memory


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


class ResendWindow:
    """The most recent writes: at most `max_bytes`, none older than `max_age` seconds before the
    newest one (so an idle connection closed by a load balancer replays its last burst only)."""

    def __init__(self, max_bytes: int, max_age: float) -> None:
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._chunks: deque[tuple[float, bytes]] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, data: bytes) -> None:
        if self.max_bytes <= 0 or not data:
            return
        now = time.monotonic()
        self._chunks.append((now, data))
        self._size += len(data)
        while len(self._chunks) > 1 and (
            self._size > self.max_bytes or now - self._chunks[0][0] > self.max_age
        ):
            self._size -= len(self._chunks.popleft()[1])

    def data(self) -> list[bytes]:
        return [chunk for _, chunk in self._chunks]


class TcpTransport:
    """One TCP connection, plain or TLS, written in whole batches.

    TLS runs over memory BIOs so that we, not a buffering transport, decide when bytes count as
    written. `connect_grace` waits briefly after connecting for the receiver to hang up on us:
    rsyslog and syslog-ng reject an unacceptable client certificate or sender by closing right
    after the handshake, not by failing it, so the first batch would otherwise vanish.
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
        self._resend_pending = False
        self._sock: socket.socket | None = None
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._sock is not None

    async def connect(self) -> None:
        """Connect unless connected; raises `TransportError`."""
        if self._sock is not None:
            gone = self._peer_gone()
            if gone is None:
                return
            self._lost(gone)
        loop = asyncio.get_running_loop()
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
                await loop.sock_sendall(sock, pending)
            data = await loop.sock_recv(sock, 65536)
            if not data:
                raise TransportError(
                    f"cannot connect to {self.target}: the receiver closed the connection during "
                    "the TLS handshake (does it expect TLS, and our client certificate?)")
            self._incoming.write(data)
        if pending := self._outgoing.read():
            await loop.sock_sendall(sock, pending)
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
                    return "the receiver closed the connection"
                if (gone := self._absorb(data)) is not None:
                    return gone
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            return describe(exc)

    def _lost(self, reason: str) -> None:
        """Drop a connection we did not choose to close: resend the window on the next one."""
        if len(self._window):
            self._resend_pending = True
        log.warning("transport_connection_lost", target=self.target, reason=reason,
                    resend_bytes=len(self._window))
        self._discard()

    def _discard(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._tls = None

    async def _write(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                     payload: bytes) -> None:
        if self._tls is None:
            await loop.sock_sendall(sock, payload)
            return
        view = memoryview(payload)
        while view:
            written = self._tls.write(view[:_TLS_CHUNK])
            view = view[written:]
            await loop.sock_sendall(sock, self._outgoing.read())

    async def send(self, chunks: Sequence[bytes]) -> None:
        """Write `chunks` in one go; raises `TransportError` if they may not have arrived."""
        await self.connect()
        sock = self._sock
        assert sock is not None
        data = b"".join(chunks)
        payload = data
        if self._resend_pending:
            payload = b"".join([*self._window.data(), data])
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._write_timeout):
                await self._write(loop, sock, payload)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._lost(describe(exc))
            raise TransportError(f"writing to {self.target} failed: {describe(exc)}") from None
        except BaseException:  # cancelled mid-write: a frame may be cut, never reuse the stream
            self._lost("write interrupted")
            raise
        if (gone := self._peer_gone()) is not None:
            self._lost(gone)
            raise TransportError(f"{self.target}: {gone} during the write")
        if self._resend_pending:
            log.info("transport_resent", target=self.target, resend_bytes=len(self._window))
            self._resend_pending = False
        self._window.add(data)

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
