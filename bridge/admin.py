"""The admin HTTP server: `/healthz` for liveness, `/readyz` for readiness, `/metrics`.

Liveness means "the event loop still answers": a ticker task measures how late it wakes up, and
a loop that stalled longer than `max_lag` (a blocking call, a runaway CPU loop) is reported
dead so the supervisor restarts it. Readiness is `Health.ready()`.

It binds 127.0.0.1 by default. With a token configured every endpoint but `/healthz` needs
`Authorization: Bearer <token>`; `/healthz` stays open because it says nothing but "alive" and
container health checks cannot always send headers.

Connections are bounded (bridge/admin_guard.py): a header deadline, an idle deadline and a cap,
so a flood of half-open connections cannot take `/healthz` down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import Field, SecretStr, field_validator

from bridge import metrics  # noqa: F401  (registers every bridge_* metric)
from bridge.admin_guard import ConnectionGuard, GuardedSite, connection_limit
from bridge.components import SecretFields, StrictModel
from bridge.health import Health
from bridge.net import is_loopback
from bridge.secrets import remember

log = structlog.get_logger(__name__)

__all__ = ["AdminConfig", "AdminServer", "is_loopback"]


ADMIN_TOKEN_MIN_LENGTH = 16


class AdminConfig(SecretFields, StrictModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)
    # Bearer token for every endpoint but /healthz; or `token_file` (a mounted secret).
    token: SecretStr | None = None
    # Connection bounds (bridge/admin_guard.py): a flood of idle or half-sent connections must
    # not use up the process's file descriptors and take /healthz down with it.
    max_connections: int = Field(default=64, ge=1, le=4096)
    header_timeout: float = Field(default=5.0, gt=0, le=300)  # first byte to complete headers
    idle_timeout: float = Field(default=5.0, gt=0, le=3600)  # no request in progress

    @field_validator("token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        """A short token can be guessed, and redacting every 3-letter word would be useless."""
        if token is not None and len(token.get_secret_value()) < ADMIN_TOKEN_MIN_LENGTH:
            raise ValueError(f"too short: at least {ADMIN_TOKEN_MIN_LENGTH} characters "
                             "(e.g. `openssl rand -hex 32`)")
        return token

OPEN_PATHS = frozenset({"/healthz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminServer:
    """aiohttp server for the admin endpoints; `port` is the bound port (config port 0 = any)."""

    def __init__(
        self,
        config: AdminConfig,
        health: Health,
        *,
        max_lag: float = 5.0,
        tick: float = 0.5,
    ) -> None:
        self.config = config
        self.health = health
        self.max_lag = max_lag
        self.tick = tick
        self._token: bytes | None = None
        if config.token is not None:
            self._token = remember(config.token.get_secret_value()).encode()
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._last_tick = time.monotonic()
        self._last_lag = 0.0
        self._port: int | None = None
        self._guard: ConnectionGuard | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("admin server is not running")
        return self._port

    async def start(self) -> None:
        if not self.config.enabled:
            log.info("admin_disabled")
            return
        if self._runner is not None:
            return
        guard = ConnectionGuard(connection_limit(self.config.max_connections),
                                header_timeout=self.config.header_timeout,
                                idle_timeout=self.config.idle_timeout)
        # The guard's middleware is outermost: it must see a request before auth answers it.
        app = web.Application(middlewares=[guard.middleware, self._auth])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        # aiohttp's own keep-alive timer as a second line behind the guard's deadlines.
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               keepalive_timeout=self.config.idle_timeout)
        await runner.setup()
        site = GuardedSite(runner, self.config.host, self.config.port, guard)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner, self._guard = runner, guard
        self._port = int(runner.addresses[0][1])
        self._last_tick, self._last_lag = time.monotonic(), 0.0
        self._ticker = asyncio.create_task(self._tick_loop(), name="admin-loop-ticker")
        if self._token is None and not is_loopback(self.config.host):
            log.warning(
                "admin_exposed_without_token",
                host=self.config.host,
                port=self._port,
                hint="anyone who can reach this address can read /readyz and /metrics; "
                "set admin.token or bind admin.host to 127.0.0.1",
            )
        log.info("admin_listening", host=self.config.host, port=self._port,
                 auth="bearer" if self._token else "none", max_connections=guard.limit,
                 header_timeout=self.config.header_timeout,
                 idle_timeout=self.config.idle_timeout)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._guard is not None:
            self._guard.close_idle()  # idle and half-open ones: nothing to wait for
            self._guard = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._port = None

    @property
    def open_connections(self) -> int:
        """Admin connections open right now (at most the guard's limit)."""
        return len(self._guard) if self._guard is not None else 0

    def loop_lag(self) -> float:
        """Seconds the loop was late: the last measured lag, or the current stall if longer."""
        pending = time.monotonic() - self._last_tick - self.tick
        return max(self._last_lag, pending, 0.0)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            self._last_lag = max(0.0, now - self._last_tick - self.tick)
            self._last_tick = now

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is None or request.path in OPEN_PATHS:
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token):
            return await handler(request)
        return web.json_response(
            {"error": "unauthorized", "detail": "send Authorization: Bearer <admin token>"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="bridge-admin"'},
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        lag = self.loop_lag()
        if lag > self.max_lag:
            return web.json_response(
                {"status": "unhealthy", "reason": f"event loop lagged {lag:.1f} s "
                 f"(limit {self.max_lag:g} s)", "loop_lag": round(lag, 3)},
                status=503,
            )
        return web.json_response({"status": "ok", "loop_lag": round(lag, 3)})

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, detail = self.health.ready()
        return web.json_response(detail, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
