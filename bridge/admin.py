"""The admin HTTP server: `/healthz` for liveness, `/readyz` for readiness, `/metrics`.

Liveness means "the event loop still answers": a ticker task measures how late it wakes up, and
a loop that stalled longer than `max_lag` (a blocking call, a runaway CPU loop) is reported
dead so the supervisor restarts it. Readiness is `Health.ready()`.

It binds 127.0.0.1 by default. With a token configured every endpoint but `/healthz` needs
`Authorization: Bearer <token>`; `/healthz` stays open because it says nothing but "alive" and
container health checks cannot always send headers.

`/api/v1/silences` (GET lists, POST adds, DELETE `/api/v1/silences/{id}` expires; see
bridge/silences.py) changes what gets delivered, so it is never open to the network: without a
token it answers only on a loopback address, and 403 on any other.

Connections are bounded (bridge/admin_guard.py): a header deadline, an idle deadline and a cap,
so a flood of half-open connections cannot take `/healthz` down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import Field, SecretStr, field_validator

from bridge import metrics  # noqa: F401  (registers every bridge_* metric)
from bridge.admin_guard import ConnectionGuard, GuardedSite, connection_limit
from bridge.components import SecretFields, StrictModel
from bridge.durations import parse_time
from bridge.health import Health
from bridge.model import utcnow
from bridge.net import is_loopback
from bridge.secrets import redact, remember
from bridge.silences import (
    SilenceError,
    SilenceService,
    UnknownSilence,
    new_silence,
    parse_matchers,
)
from bridge.store.base import SilenceRecord, StoreError

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
API_PREFIX = "/api/"
SILENCES = "/api/v1/silences"
MAX_API_BODY = 64 * 1024  # a silence is a few hundred bytes
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
        silences: SilenceService | None = None,
    ) -> None:
        self.config = config
        self.health = health
        self.silences = silences
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
        app = web.Application(middlewares=[guard.middleware, self._auth],
                              client_max_size=MAX_API_BODY)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        if self.silences is not None:
            app.router.add_get(SILENCES, self._list_silences)
            app.router.add_post(SILENCES, self._add_silence)
            app.router.add_delete(SILENCES + "/{id}", self._expire_silence)
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
        if self._token is None and request.path.startswith(API_PREFIX) \
                and not is_loopback(self.config.host):
            return web.json_response(
                {"error": "forbidden", "detail": "the admin API changes what is delivered: "
                 "set admin.token to use it on a non-loopback address"}, status=403)
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

    # -- silences (bridge/silences.py)

    async def _list_silences(self, request: web.Request) -> web.Response:
        assert self.silences is not None
        ended = request.query.get("ended", "").lower() in ("1", "true", "yes")
        now = utcnow()
        try:
            found = await self.silences.list(ended=ended)
        except StoreError as exc:
            return _problem(503, "state store unavailable", str(exc))
        return web.json_response({"silences": [s.to_dict(now) for s in found]})

    async def _add_silence(self, request: web.Request) -> web.Response:
        assert self.silences is not None
        try:
            body = await request.json()
        except ValueError:
            return _problem(400, "invalid silence", "the body is not JSON")
        try:
            record = silence_from_api(body)
        except SilenceError as exc:
            return _problem(400, "invalid silence", str(exc))
        try:
            silence = await self.silences.add(record)
        except StoreError as exc:
            return _problem(503, "state store unavailable", str(exc))
        return web.json_response(silence.to_dict(utcnow()), status=201)

    async def _expire_silence(self, request: web.Request) -> web.Response:
        assert self.silences is not None
        try:
            silence = await self.silences.expire(request.match_info["id"])
        except UnknownSilence as exc:
            return _problem(404, "no such silence", str(exc))
        except StoreError as exc:
            return _problem(503, "state store unavailable", str(exc))
        return web.json_response(silence.to_dict(utcnow()))

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _problem(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": redact(detail)}, status=status)


API_FIELDS = frozenset({"matchers", "duration", "ends_at", "starts_at", "reason", "author"})


def silence_from_api(body: Any) -> SilenceRecord:
    """A silence from a POST body: `matchers` (the routes' syntax, or a list of
    `field=value` strings), `duration` ("7d") or `ends_at` (ISO), optional `starts_at`,
    `reason` and `author` (both required: the audit trail says who and why)."""
    if not isinstance(body, dict):
        raise SilenceError("the body must be a JSON object")
    unknown = sorted(set(body) - API_FIELDS)
    if unknown:
        raise SilenceError(f"unknown field(s) {', '.join(unknown)}; known: "
                           f"{', '.join(sorted(API_FIELDS))}")
    texts = {}
    for name in ("duration", "ends_at", "starts_at", "reason", "author"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise SilenceError(f"{name} must be a string")
        texts[name] = value
    return new_silence(parse_matchers(body.get("matchers") or {}),
                       reason=texts["reason"] or "", author=texts["author"] or "",
                       duration=texts["duration"], ends_at=_moment(texts["ends_at"], "ends_at"),
                       starts_at=_moment(texts["starts_at"], "starts_at"), origin="api")


def _moment(text: str | None, name: str) -> datetime | None:
    try:
        return parse_time(text) if text is not None else None
    except ValueError as exc:
        raise SilenceError(f"{name}: {exc}") from None
