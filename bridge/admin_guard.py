"""Keep the admin port answering when somebody floods it.

Each connection costs a file descriptor, and aiohttp on its own holds a silent or half-sent
connection for its whole keep-alive (3630 s): 1,100 such sockets exhausted a daemon's 1024
descriptors, `/healthz` stopped answering and a liveness probe would have restarted a healthy
daemon. So the admin server's connections go through a `ConnectionGuard`:

- a *header deadline*: from its first byte, a request has `header_timeout` seconds to arrive
  whole (a slow drip does not extend it);
- an *idle deadline*: a connection with no request in progress, fresh or kept alive after a
  response, is closed after `idle_timeout` seconds;
- a *cap*: at most `limit` connections. A new one beyond it closes the oldest connection that
  has no request in progress (a half-open or idle one); when every one is busy the new one is
  refused at once. Either way a probe gets in and is answered in milliseconds.

The cap also stays well inside the process's open-files limit (`connection_limit`), and
`LoopErrorLog` keeps an out-of-descriptors accept loop from logging thousands of tracebacks.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from bridge.secrets import redact

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ProtocolFactory = Callable[[], asyncio.BaseProtocol]

ACCEPT_BATCH = 128  # listen backlog, which asyncio also uses as the accept batch per wake-up
MIN_CONNECTIONS = 4
WARN_EVERY = 10.0  # seconds between two warnings about the same kind of trouble


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one, as Go and systemd services do (a container
    often starts with soft 1024 under a far higher hard limit); (soft, hard) afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # some sandboxes refuse; the soft limit then applies
            pass
    return soft, hard


def connection_limit(configured: int) -> int:
    """`configured`, lowered so the admin server can use at most a quarter of the descriptors
    left after one accept batch (vendors, sinks and the state store need the rest), but not
    below `MIN_CONNECTIONS` for that reason alone."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return min(configured, max(MIN_CONNECTIONS, (soft - ACCEPT_BATCH) // 4))


class Every:
    """Says yes at most once per `period` seconds and counts the times it said no."""

    def __init__(self, period: float = WARN_EVERY) -> None:
        self.period = period
        self._last = -period
        self.skipped = 0

    def due(self) -> int | None:
        """None while quiet; otherwise how many occurrences this one stands for (itself plus
        those skipped since the last yes)."""
        now = time.monotonic()
        if now - self._last < self.period:
            self.skipped += 1
            return None
        self._last, count, self.skipped = now, self.skipped + 1, 0
        return count


class _Connection(asyncio.Protocol):
    """One admin connection: aiohttp's protocol, watched by the guard. Only the calls asyncio
    makes on a protocol are passed on."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a request handler is running
        self.reading = False  # bytes of a request arrived since the last one was answered
        self.deadline: asyncio.TimerHandle | None = None
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.guard.admit(self):
            transport.abort()
            return
        self.admitted = True
        self.guard.expect(self, self.guard.idle_timeout)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy and not self.reading:
            self.reading = True  # the header deadline runs from the first byte
            self.guard.expect(self, self.guard.header_timeout)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def close(self) -> None:
        """Abort, not close: a peer that never reads must not keep the descriptor."""
        if self.transport is not None:
            self.transport.abort()


class ConnectionGuard:
    """Deadlines and a cap for every connection of one server (see the module docstring)."""

    def __init__(self, limit: int, header_timeout: float, idle_timeout: float) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._open: dict[asyncio.Transport, _Connection] = {}  # oldest first
        self._shed_warning = Every()
        self.shed = 0  # connections closed or refused because of the cap, since start

    def __len__(self) -> int:
        return len(self._open)

    def wrap(self, factory: ProtocolFactory) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            inner = factory()
            assert isinstance(inner, asyncio.Protocol)
            return _Connection(self, inner)

        return make

    def admit(self, conn: _Connection) -> bool:
        """Make room for `conn` (closing the oldest idle connection) or refuse it."""
        assert conn.transport is not None
        admitted = True
        if len(self._open) >= self.limit:
            victim = next((c for c in self._open.values() if not c.busy), None)
            if victim is None:
                admitted = False
            else:
                self.forget(victim)
                victim.close()
            self.shed += 1
            self._warn_shed(refused=not admitted)
        if admitted:
            self._open[conn.transport] = conn
        return admitted

    def forget(self, conn: _Connection) -> None:
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        if conn.transport is not None:
            self._open.pop(conn.transport, None)

    def expect(self, conn: _Connection, seconds: float) -> None:
        """Close `conn` unless a request starts being handled within `seconds`."""
        if conn.deadline is not None:
            conn.deadline.cancel()
        conn.deadline = asyncio.get_running_loop().call_later(seconds, self._expire, conn)

    def _expire(self, conn: _Connection) -> None:
        conn.deadline = None
        if not conn.busy:
            self.forget(conn)
            conn.close()

    def close_idle(self) -> None:
        """Close every connection without a request in progress (at shutdown)."""
        for conn in [c for c in self._open.values() if not c.busy]:
            self.forget(conn)
            conn.close()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outermost middleware: a connection with a request in progress is never shed and has
        no deadline; once answered it is idle again."""
        transport = request.transport
        conn = self._open.get(transport) if transport is not None else None
        if conn is None:
            return await handler(request)
        conn.busy, conn.reading = True, False
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        try:
            return await handler(request)
        finally:
            conn.busy = False
            if conn.transport is not None and conn.transport in self._open:
                self.expect(conn, self.idle_timeout)

    def _warn_shed(self, *, refused: bool) -> None:
        count = self._shed_warning.due()
        if count is not None:
            log.warning("admin_connections_shed", limit=self.limit, shed=count,
                        shed_total=self.shed, refused=refused,
                        hint="more admin connections than admin.max_connections: the oldest "
                        "idle or half-open ones are closed (a flood, or a client leaking "
                        "connections)")


class GuardedSite(web.TCPSite):
    """A TCP site whose connections all go through `guard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port, backlog=ACCEPT_BATCH)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard.wrap(server), self._host, self._port, backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1]


class LoopErrorLog:
    """The event loop's exception handler: one redacted line per kind of error and
    `WARN_EVERY` seconds, with a count of those left out. Out of descriptors, asyncio's
    accept loop reports the same failure up to 128 times per wake-up (CPython's
    `_accept_connection` keeps looping after EMFILE), which made a 52 MB traceback storm."""

    ACCEPT_FAILED = "socket.accept() out of system resource"

    def __init__(self) -> None:
        self._limits: dict[tuple[str, str], Every] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "unhandled exception in event loop"))
        exc = context.get("exception")
        kind = type(exc).__name__ if exc is not None else ""
        limit = self._limits.setdefault((message, kind), Every())
        count = limit.due()
        if count is None:
            return
        error = redact(f"{kind}: {exc}") if exc is not None else None
        if message == self.ACCEPT_FAILED:
            sock = context.get("socket")
            log.error("accept_failed", error=error, occurrences=count,
                      socket=redact(str(sock)) if sock is not None else None,
                      hint="out of file descriptors or memory: new connections wait; raise "
                      "the open-files limit (systemd LimitNOFILE=, ulimit -n)")
            return
        details = {k: redact(str(v)) for k, v in context.items()
                   if k not in ("message", "exception")}
        log.error("event_loop_error", message=redact(message), occurrences=count,
                  exc_info=exc if isinstance(exc, BaseException) else None, **details)
