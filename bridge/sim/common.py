"""What every vendor simulator shares, so the three vendor modules only describe their API.

One middleware does, for every request: count it, authenticate it (vendor callback), apply the
vendor's rate limit (sliding window, 429 in the vendor's own error shape), apply a scripted
`Fault`, call the route handler, and turn `SimError`s and aiohttp's own 404/405 into the vendor's
error body. `RunningSim` serves an app on an ephemeral localhost port (optionally TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import ssl
import struct
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any, ClassVar, TypeVar, cast

from aiohttp import web
from aiohttp.typedefs import Middleware

from bridge.sim.faults import Fault, FaultPlan

Clock = Callable[[], float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


class SimError(Exception):
    """Raised by route handlers; the middleware renders it in the vendor's error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class RateLimitWindow:
    """Sliding-window log limiter: at most `limit` admitted requests per key in any window.

    A log (not a fixed bucket) is what makes "exactly `limit` requests, then 429" testable at any
    phase, and `clock` is injectable so tests advance time instead of sleeping. Rejected requests
    are not logged, so a client that backs off as told recovers on time.
    """

    def __init__(self, limit: int, window_seconds: float, *, clock: Clock = time.monotonic) -> None:
        if limit < 1 or window_seconds <= 0:
            raise ValueError("limit must be >= 1 and window_seconds > 0")
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    def _log(self, key: str, now: float) -> deque[float]:
        log = self._hits.get(key)
        if log is None:
            log = self._hits[key] = deque()
        horizon = now - self.window
        while log and log[0] <= horizon:
            log.popleft()
        return log

    def hit(self, key: str) -> float | None:
        """Admit one request (None) or return the seconds until a slot frees up."""
        now = self.clock()
        log = self._log(key, now)
        if len(log) >= self.limit:
            return max(0.0, log[0] + self.window - now)
        log.append(now)
        return None

    def remaining(self, key: str) -> int:
        return max(0, self.limit - len(self._log(key, self.clock())))

    def reset_in(self, key: str) -> float:
        """Seconds until the oldest logged request leaves the window (0 when the log is empty)."""
        now = self.clock()
        log = self._log(key, now)
        return max(0.0, log[0] + self.window - now) if log else 0.0

    def clear(self) -> None:
        self._hits.clear()


def retry_after_value(seconds: float) -> str:
    """Whole seconds, rounded up and at least 1: retrying at the advertised time must succeed."""
    return str(max(1, math.ceil(seconds)))


@dataclass(frozen=True, slots=True)
class Served429:
    path: str
    limit_key: str
    retry_after: str | None
    injected: bool  # True for a scripted `status` fault, False for the real rate limiter


@dataclass
class SimStats:
    """What a simulator served, for assertions (`assert not world.stats.served_429`).

    A `reset` fault sends nothing; it is counted under status 499 ("client closed request").
    """

    requests_total: int = 0
    requests_by_path: Counter[str] = field(default_factory=Counter)
    responses_by_status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    served_429: list[Served429] = field(default_factory=list)

    def reset(self) -> None:
        self.requests_total = 0
        self.requests_by_path.clear()
        self.responses_by_status.clear()
        self.rate_limited = 0
        self.served_429.clear()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as far as the simulator cares: whose rate limit, which tenant, scopes."""

    limit_key: str
    tenant: str = ""
    scopes: frozenset[str] = frozenset()


class Timeline:
    """Timestamps for world events: from `now`, but strictly increasing.

    Newest-first ordering by `createdAt` must put an item created later strictly first, even when
    a test creates many in the same millisecond.
    """

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self._last: datetime | None = None

    def now(self) -> datetime:
        wall = self._now().astimezone(UTC)
        current = wall.replace(microsecond=wall.microsecond // 1000 * 1000)
        if self._last is not None and current <= self._last:
            current = self._last + timedelta(milliseconds=1)
        self._last = current
        return current

    def stamp(self) -> str:
        return iso(self.now())

    def peek(self) -> datetime:
        """The current time without consuming a tick (for back-dated bulk data)."""
        return self._now().astimezone(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and `Z`, as JavaScript's `toISOString` writes it."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def rand_uuid(rng: Random) -> str:
    """A UUIDv4 from a seeded generator, so a seeded world is reproducible.

    Same bits as `uuid.UUID(int=..., version=4)`, formatted by hand: bulk worlds make 100k+.
    """
    bits = rng.getrandbits(128) & _UUID_CLEAR | _UUID_SET
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID_SET = (0x8000 << 48) | (4 << 76)


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(body=json_bytes(payload), status=status, headers=headers,
                        content_type="application/json")


def int_param(
    request: web.Request, name: str, default: int, *, low: int = 1, high: int | None = None
) -> int:
    """An integer query parameter within [low, high]; anything else is the vendor's 400."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise SimError(400, "VALIDATION_ERROR", f"{name} must be an integer {bound}")
    return value


def page_slice(items: Sequence[T], page: int, limit: int) -> Sequence[T]:
    """One page of an already ordered list: the only per-request work besides encoding."""
    start = (page - 1) * limit
    return items[start : start + limit]


def total_pages(total: int, limit: int) -> int:
    return math.ceil(total / limit) if limit else 0


def api_key(request: web.Request, header: str = "X-API-Key") -> str | None:
    value = request.headers.get(header, "").strip()
    return value or None


def bearer_token(request: web.Request) -> tuple[bool, str | None]:
    """(header present, token): a malformed header is present but yields no token."""
    value = request.headers.get("Authorization")
    if value is None or not value.strip():
        return False, None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return True, None
    return True, token.strip()


class SimWorld(ABC):
    """State and policy of one simulated vendor; subclasses add the vendor's data and routes."""

    vendor: ClassVar[str]
    prefix: ClassVar[str] = ""
    rate_limit_code: ClassVar[str] = "RATE_LIMITED"

    def __init__(
        self,
        *,
        rate_limit: int,
        rate_window: float,
        clock: Clock | None = None,
        send_retry_after: bool = True,
        seed: int = 0,
    ) -> None:
        self.faults = FaultPlan()
        self.stats = SimStats()
        self.limiter = RateLimitWindow(rate_limit, rate_window, clock=clock or time.monotonic)
        self.send_retry_after = send_retry_after
        self.rng = Random(seed)
        # Bumped by every mutation through the world API; derived views are dropped with it.
        self.version = 0
        self._views: dict[Hashable, Any] = {}
        self._views_version = 0

    def touch(self) -> None:
        """Invalidate views; call after editing item dicts directly instead of via methods."""
        self.version += 1

    def view(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A derived view (an ordered or filtered list), recomputed only after a change.

        This is what keeps a page request O(page): sorting and filtering happen once per world
        version, not once per request.
        """
        if self._views_version != self.version:
            self._views.clear()
            self._views_version = self.version
        if key not in self._views:
            self._views[key] = compute()
        return cast(T, self._views[key])

    @abstractmethod
    def authenticate(self, request: web.Request) -> Principal | web.Response:
        """The caller, or the vendor's 401/403 response."""

    @abstractmethod
    def error_body(self, status: int, code: str, message: str) -> Any:
        """The vendor's error JSON."""

    @abstractmethod
    def drift(self, request: web.Request, count: int) -> None:
        """Insert `count` new items at the head of the list `request` was served (drift fault)."""

    @abstractmethod
    def random_step(self, rng: Random) -> str:
        """One realistic random change (for the demo); returns a short description."""

    def page_of(self, request: web.Request) -> int | None:
        """The page a request asks for, for `Fault.page`; absent means page 1."""
        raw = request.query.get("page", "1")
        return int(raw) if raw.isdigit() else None

    def decorate(self, response: web.StreamResponse, principal: Principal) -> None:
        """Headers the vendor adds to every authenticated response (e.g. X-RateLimit-*)."""
        return None

    def error(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return json_response(self.error_body(status, code, message), status, headers)


STOPPING = web.AppKey("bridge_sim_stopping", asyncio.Event)
PREFIX = web.AppKey("bridge_sim_prefix", str)
PRINCIPAL = web.RequestKey("bridge_sim_principal", Principal)


def build_app(world: SimWorld, routes: Iterable[web.RouteDef]) -> web.Application:
    """An aiohttp app with the shared middleware in front of the vendor's routes."""

    async def on_startup(app: web.Application) -> None:
        app[STOPPING] = asyncio.Event()

    app = web.Application(middlewares=[_middleware(world)])
    app[PREFIX] = world.prefix
    app.on_startup.append(on_startup)
    app.add_routes(list(routes))
    return app


def _middleware(world: SimWorld) -> Middleware:
    @web.middleware
    async def sim_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        stats = world.stats
        stats.requests_total += 1
        stats.requests_by_path[request.path] += 1
        response = await _serve(world, request, handler)
        stats.responses_by_status[response.status] += 1
        return response

    return sim_middleware


async def _serve(world: SimWorld, request: web.Request, handler: Handler) -> web.StreamResponse:
    principal = world.authenticate(request)
    if isinstance(principal, web.StreamResponse):
        return principal
    request[PRINCIPAL] = principal
    response: web.StreamResponse
    wait = world.limiter.hit(principal.limit_key)
    if wait is not None:
        world.stats.rate_limited += 1
        retry_after = retry_after_value(wait) if world.send_retry_after else None
        response = world.error(429, world.rate_limit_code, "Rate limit exceeded",
                               {"Retry-After": retry_after} if retry_after else None)
        world.stats.served_429.append(
            Served429(request.path, principal.limit_key, retry_after, injected=False))
    else:
        fault = world.faults.match(request.path, world.page_of(request)) if world.faults else None
        if fault is None:
            response = await _call(world, request, handler)
        else:
            response = await _apply_fault(world, fault, request, handler, principal)
    world.decorate(response, principal)
    return response


async def _call(world: SimWorld, request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SimError as exc:
        return world.error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:  # the router's own 404/405, in the vendor's shape
        code = "NOT_FOUND" if exc.status == 404 else exc.reason.upper().replace(" ", "_")
        return world.error(exc.status, code, exc.reason)


async def _apply_fault(
    world: SimWorld, fault: Fault, request: web.Request, handler: Handler, principal: Principal
) -> web.StreamResponse:
    kind = fault.kind
    if kind == "status":
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
        if fault.status == 429:
            world.stats.served_429.append(
                Served429(request.path, principal.limit_key, fault.retry_after, injected=True))
        return world.error(fault.status, fault.code, f"Simulated HTTP {fault.status}", headers)
    if kind == "envelope_error":
        return json_response(world.error_body(200, fault.code, "Simulated error in a 200 body"))
    if kind == "reset":
        _reset(request)
        # Nothing reaches the client; this object only satisfies aiohttp's handler contract.
        return web.Response(status=499)
    if kind == "timeout":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(request.app[STOPPING].wait(), fault.delay)
    response = await _call(world, request, handler)
    if kind == "drift":
        world.drift(request, fault.drift)
    elif kind != "timeout" and response.status == 200 and isinstance(response, web.Response):
        assert isinstance(response.body, bytes)
        response.body = mangle_body(response.body, fault)
    return response


def _reset(request: web.Request) -> None:
    """Abort the TCP connection with RST (SO_LINGER 0), as a crashing proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


INVALID_JSON_BODY = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def mangle_body(body: bytes, fault: Fault) -> bytes:
    """Apply a body fault to a JSON response served with HTTP 200."""
    if fault.kind == "truncate":
        return body[: len(body) // 2]
    if fault.kind == "invalid_json":
        return INVALID_JSON_BODY
    payload = json.loads(body)
    if not isinstance(payload, dict):
        return body
    key = _main_key(payload)
    if key is None:
        return body
    part = payload[key]
    if fault.kind == "empty":
        if isinstance(part, list):
            payload[key] = []
        elif isinstance(part, dict):
            lists = [k for k, v in part.items() if isinstance(v, list)]
            payload[key] = {k: ([] if k in lists else v) for k, v in part.items()} if lists else {}
    elif fault.kind == "schema":
        payload[key] = _wrong_shape(part, fault.variant or "object")
    return json_bytes(payload)


def _main_key(payload: dict[str, Any]) -> str | None:
    """Where the vendor puts the items: `data` (ScanOrbit, Aether365) or the first list."""
    if "data" in payload:
        return "data"
    return next((k for k, v in payload.items() if isinstance(v, list)), None)


def _wrong_shape(part: Any, variant: str) -> Any:
    if variant == "missing_id":
        if isinstance(part, list) and part and isinstance(part[0], dict):
            first = {k: v for k, v in part[0].items() if k != "id"}
            return [first, *part[1:]]
        if isinstance(part, dict) and "id" in part:
            return {k: v for k, v in part.items() if k != "id"}
        if isinstance(part, dict):  # a snapshot of lists: the first row of each loses its id
            return {k: _wrong_shape(v, variant) if isinstance(v, list) else v
                    for k, v in part.items()}
        return part
    if isinstance(part, list):
        return {"items": part}
    if isinstance(part, dict):
        lists = {k: {"items": v} for k, v in part.items() if isinstance(v, list)}
        return {**part, **lists} if lists else [part]
    return {"value": part}


class RunningSim:
    """A simulator app served on 127.0.0.1 (port 0 = ephemeral) until `stop()`.

    `url` includes the vendor's path prefix, so it is exactly what a source's `base_url` takes.
    """

    def __init__(
        self,
        app: web.Application,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        shutdown_timeout: float = 1.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None

    @property
    def root(self) -> str:
        """Scheme, host and port, without the vendor prefix."""
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.root + self.app[PREFIX]

    async def start(self) -> RunningSim:
        # No access log: benchmarks push thousands of requests through here.
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               shutdown_timeout=self.shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        stopping = self.app.get(STOPPING)
        if stopping is not None:
            stopping.set()  # wake handlers stalled by a timeout fault
        await runner.cleanup()

    async def __aenter__(self) -> RunningSim:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
