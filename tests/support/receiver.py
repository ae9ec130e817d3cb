"""A real HTTP receiver for webhook deliveries, scriptable per test."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    id: str
    body: dict[str, Any]
    at: float
    authorization: str = ""


@dataclass
class Receiver:
    """Records every POST; `mode` decides the answer: "ok", "hang", or an HTTP status;
    `answers` overrides it per event id (webhook-id) with a status. `delay` makes every answer
    that many seconds slow (a receiver under load)."""

    mode: str | int = "ok"
    delay: float = 0.0
    # Error answers quote the caller's credentials, as careless receivers do.
    echo_auth: bool = False
    retry_after: str | None = None
    answers: dict[str, int] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    attempts: list[Received] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        entry = Received(request.headers.get("webhook-id", ""), body, time.monotonic(),
                         request.headers.get("Authorization", ""))
        async with self.changed:
            self.attempts.append(entry)
            self.changed.notify_all()
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        mode = self.answers.get(entry.id, self.mode)
        if mode != "ok" and mode != 200:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            answer: dict[str, Any] = {"error": "scripted"}
            if self.echo_auth:
                answer.update(authorization=entry.authorization,
                              token=entry.authorization.removeprefix("Bearer "),
                              headers=dict(request.headers))
            return web.json_response(answer, status=int(mode), headers=headers)
        async with self.changed:
            self.received.append(entry)
            self.changed.notify_all()
        return web.json_response({"ok": True})

    async def start(self, port: int = 0) -> Receiver:
        """Listen on `port` (a free one by default; the old one again after `stop`)."""
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
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

    def delivered_ids(self) -> list[str]:
        return [r.id for r in self.received]

    def payload(self) -> str:
        return json.dumps([r.body for r in self.received])
