"""A hostile vendor: the ScanOrbit simulator behind an attacker who scripts its answers.

`HostileVendor` serves ScanOrbit's real contract (`bridge.sim.scanorbit`: keys, pages, totals,
findings by id), so the real source and pipeline sweep it, and a middleware in front of it
records every request and carries out `Attack`s on the requests they match:

- `redirect`: a 3xx to `to` (an origin: this server's own for a same-origin redirect, another
  server's, or plain http from https), at the same path and query plus `redirected=1`. A
  request already carrying that marker is served, so a same-origin redirect ends; `loop`
  redirects it again, forever.
- `oversized`: the real page padded with a `padding` field to `size` bytes, declared with
  Content-Length or (`chunked`) streamed without one. Still valid JSON: only the size is wrong.
- `gzip_bomb`: the same padded page at `size` bytes, gzip-compressed (about 1000:1). Only the
  compressed bytes exist on this side; the client decides how much of them it inflates.
- `slow_drip`: the real page, one byte every `interval` seconds.

`poison(token, raw)` swaps the JSON string `"<token>"` in every answer for raw bytes that no
JSON encoder would write (a lone surrogate escape, `1e999`, a byte that is not UTF-8, nesting
300 deep): put the token into a finding's field through the world, and the finding is served
with that poison in place.

`OtherOrigin` is the server a redirect points at: it records who came (and with which key)
and answers every path with the empty page that would look like "everything was fixed".
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from bridge.sim.common import RunningSim, json_bytes
from bridge.sim.scanorbit import ScanOrbitWorld, make_app

AttackKind = Literal["redirect", "oversized", "gzip_bomb", "slow_drip"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REDIRECTED = "redirected"
# The poisons a JavaScript, Latin-1 or careless vendor really sends.
DEEP_NESTING = b"[" * 300 + b"]" * 300
LONE_SURROGATE = b'"cut mid-emoji \\ud83d"'
HUGE_NUMBER = b"1e999"
INVALID_UTF8 = b'"caf\xe9 cr\xe8me"'
EMPTY_PAGE = {"data": [], "pagination": {"page": 1, "limit": 100, "total": 0, "totalPages": 0}}


@dataclass(frozen=True)
class Seen:
    """One request as it arrived."""

    path: str  # decoded, as routed
    raw_path: str  # as sent on the wire, query included
    api_key: str | None
    authorization: str | None


@dataclass
class Attack:
    kind: AttackKind
    path: str  # a regex searched in the request path
    page: int | None = None
    to: str = ""  # redirect: the origin to send the client to
    status: int = 302
    loop: bool = False
    size: int = 0  # oversized, gzip_bomb: bytes of the (decoded) body
    chunked: bool = False
    interval: float = 0.05
    hits: int = field(default=0, compare=False)

    def matches(self, request: web.Request) -> bool:
        if not re.search(self.path, request.path):
            return False
        if self.page is not None and request.query.get("page", "1") != str(self.page):
            return False
        return not (self.kind == "redirect" and not self.loop and REDIRECTED in request.query)


def _seen(request: web.Request) -> Seen:
    return Seen(request.path, request.raw_path, request.headers.get("X-API-Key"),
                request.headers.get("Authorization"))


class HostileVendor:
    """The ScanOrbit simulator on 127.0.0.1 (TLS with `ssl_context`), under attack."""

    def __init__(self, api_key: str, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.world = ScanOrbitWorld(api_keys={api_key}, seed=15, rate_limit=100_000)
        self.attacks: list[Attack] = []
        self.seen: list[Seen] = []
        self._poisons: dict[bytes, bytes] = {}
        self._bombs: dict[int, _Bomb] = {}
        app = make_app(self.world)
        app.middlewares.insert(0, self._middleware)
        self.sim = RunningSim(app, ssl_context=ssl_context)

    @property
    def url(self) -> str:
        """What a ScanOrbit source's `base_url` takes."""
        return self.sim.url

    @property
    def root(self) -> str:
        return self.sim.root

    def attack(self, kind: AttackKind, path: str, **options: Any) -> Attack:
        attack = Attack(kind, path, **options)
        if kind == "gzip_bomb" and attack.size not in self._bombs:
            self._bombs[attack.size] = _Bomb(attack.size)
        self.attacks.append(attack)
        return attack

    def poison(self, token: str, raw: bytes) -> str:
        """Serve `raw` wherever the JSON string `token` would be; returns the token to plant."""
        self._poisons[json_bytes(token)] = raw
        return token

    def calm(self) -> None:
        """No more attacks (poison stays where it was planted: the world holds it)."""
        self.attacks.clear()

    async def __aenter__(self) -> HostileVendor:
        await self.sim.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sim.stop()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.seen.append(_seen(request))
        attack = next((a for a in self.attacks if a.matches(request)), None)
        if attack is not None:
            attack.hits += 1
            if attack.kind == "redirect":
                return self._redirect(request, attack)
        response = await handler(request)
        if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
            return response
        body = response.body
        for token, raw in self._poisons.items():
            body = body.replace(token, raw)
        if attack is None or response.status != 200:
            response.body = body
            return response
        if attack.kind == "slow_drip":
            return await _drip(request, body, attack.interval)
        if attack.kind == "oversized":
            return await _send(request, _padded(body, attack.size), chunked=attack.chunked)
        return await _send(request, self._bombs[attack.size].around(body), encoding="gzip")

    def _redirect(self, request: web.Request, attack: Attack) -> web.Response:
        query = dict(request.query)
        query[REDIRECTED] = "1"
        target = request.url.with_query(query)
        location = attack.to.rstrip("/") + target.raw_path_qs
        return web.Response(status=attack.status, headers={"Location": location})



PADDING = b'{"padding":"'


class _Bomb:
    """A page padded to `size` bytes, gzipped. The padding comes first and is compressed once,
    when the attack is scripted; each request only appends its page to a copy of that state."""

    def __init__(self, size: int) -> None:
        self._squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
        parts = [self._squeeze.compress(PADDING)]
        block = b" " * (1 << 20)
        for left in range(size, 0, -len(block)):
            parts.append(self._squeeze.compress(block[: min(left, len(block))]))
        self._head = b"".join(parts)

    def around(self, body: bytes) -> bytes:
        squeeze = self._squeeze.copy()
        return self._head + squeeze.compress(b'",' + body[1:]) + squeeze.flush()


def _padded(body: bytes, size: int) -> bytes:
    """`body` (a JSON object) led by a `padding` string that makes it `size` bytes."""
    rest = b'",' + body[1:]
    return PADDING + b" " * max(0, size - len(PADDING) - len(rest)) + rest


async def _send(request: web.Request, body: bytes, *, chunked: bool = False,
                encoding: str | None = None) -> web.StreamResponse:
    """`body` in 64 KiB writes, until it is all sent or the client hangs up."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    if encoding:
        response.headers["Content-Encoding"] = encoding
    if chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = len(body)
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        for start in range(0, len(body), 1 << 16):
            await response.write(body[start:start + (1 << 16)])
        await response.write_eof()
    return response


async def _drip(request: web.Request, body: bytes, interval: float) -> web.StreamResponse:
    """Headers at once, then the body a byte at a time: a connection that never times out on
    a per-read timer, only on a total one."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        for n in range(len(body)):
            await response.write(body[n:n + 1])
            await asyncio.sleep(interval)  # the attack itself: a byte per interval
    return response


class OtherOrigin:
    """Another origin a redirect may point at: records every caller, answers "nothing left"."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self.sim = RunningSim(app)

    @property
    def root(self) -> str:
        return self.sim.root

    async def _answer(self, request: web.Request) -> web.Response:
        self.seen.append(_seen(request))
        return web.json_response(EMPTY_PAGE)

    async def __aenter__(self) -> OtherOrigin:
        await self.sim.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sim.stop()
