"""The one real HTTP receiver for webhook deliveries in the suite, scriptable per test.

It records every request (`attempts`) and what it accepted (`received`), and decides each
answer in this order: a per-event script (answers consumed one by one), a per-event standing
answer (`answers`), then `mode` for everything else ("ok", "hang", or an HTTP status).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.model import Event

Answer = tuple[int, dict[str, str]]


@dataclass
class Received:
    id: str  # the webhook-id header: the event id
    body: dict[str, Any]
    at: float  # time.monotonic() when the request arrived
    authorization: str = ""
    status: int = 200  # what the receiver answered
    raw: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def event(self) -> Event:
        return Event.from_json(self.raw)


@dataclass
class Receiver:
    """Records every POST and answers as scripted; `delay` makes every answer that many
    seconds slow (a receiver under load)."""

    mode: str | int = "ok"
    delay: float = 0.0
    # Error answers quote the caller's credentials and headers, as careless receivers do.
    echo_auth: bool = False
    retry_after: str | None = None
    answers: dict[str, int] = field(default_factory=dict)
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    attempts: list[Received] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    runner: web.AppRunner | None = None
    url: str = ""

    def script(self, event: Event | str, *answers: int | Answer) -> None:
        """The next answers to this event, in order; afterwards the standing answer again."""
        key = event if isinstance(event, str) else event.id
        self.scripts[key] = [a if isinstance(a, tuple) else (a, {}) for a in answers]

    def _answer(self, event_id: str) -> tuple[str | int, dict[str, str]]:
        queue = self.scripts.get(event_id)
        if queue:
            return queue.pop(0)
        mode = self.answers.get(event_id, self.mode)
        retry = {"Retry-After": self.retry_after} if self.retry_after and mode != "ok" else {}
        return mode, retry

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        event_id = request.headers.get("webhook-id", "")
        mode, headers = self._answer(event_id)
        status = 200 if mode in ("ok", "hang") else int(mode)
        entry = Received(event_id, _json_object(raw), time.monotonic(),
                         request.headers.get("Authorization", ""), status, raw,
                         dict(request.headers))
        async with self.changed:
            self.attempts.append(entry)
            self.changed.notify_all()
        if mode == "hang":
            await asyncio.Event().wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if not 200 <= status < 300:
            answer: dict[str, Any] = {"error": "scripted"}
            if self.echo_auth:
                answer.update(authorization=entry.authorization,
                              token=entry.authorization.removeprefix("Bearer "),
                              headers=dict(request.headers))
            return web.json_response(answer, status=status, headers=headers)
        async with self.changed:
            self.received.append(entry)
            self.changed.notify_all()
        return web.json_response({"ok": True}, status=status, headers=headers)

    async def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> Receiver:
        """Listen on `port` (a free one by default; the old one again after `stop`), over
        HTTPS with `tls` (a server context, which may require client certificates)."""
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True, ssl_context=tls)
        await site.start()
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    async def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 30.0) -> None:
        async def until() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: predicate(self))

        await asyncio.wait_for(until(), timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        await self.wait_for(lambda _: predicate(), timeout)

    @property
    def accepted(self) -> list[str]:
        """Ids the receiver answered 2xx, in order (a redelivery appears twice)."""
        return [r.id for r in self.received]

    def hits_for(self, event: Event | str) -> list[Received]:
        key = event if isinstance(event, str) else event.id
        return [h for h in self.attempts if h.id == key]

    @property
    def order_violations(self) -> list[str]:
        """Accepted events of an item that arrived before an earlier event of the same item."""
        seen: dict[str, set[int]] = defaultdict(set)
        firsts: set[str] = set()
        violations = []
        for r in self.received:
            if r.id in firsts:
                continue
            firsts.add(r.id)
            event = r.event
            missing = set(range(1, event.counter)) - seen[event.item_uid]
            if missing:
                violations.append(f"{event.key} #{event.counter} accepted before "
                                  f"#{sorted(missing)}")
            seen[event.item_uid].add(event.counter)
        return violations

    def delivered_ids(self) -> list[str]:
        return self.accepted

    def payload(self) -> str:
        return json.dumps([r.body for r in self.received])


def _json_object(raw: bytes) -> dict[str, Any]:
    """The body as JSON when it is a JSON object (a templated body may be anything)."""
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
