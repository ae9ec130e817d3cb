"""Receivers that misbehave on purpose: they redirect deliveries elsewhere and quote what they
were sent. A second server, `elsewhere`, records every request that reaches it, so a test can
prove that no event body and no credential crossed to an origin nobody configured."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """Answers 200 to anything and remembers it."""

    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(Seen(request.method, request.path, dict(request.headers),
                              await request.read()))
        return web.json_response({"ok": True})


@dataclass
class RedirectingReceiver:
    """`/hook` answers `status` with `Location: location`; `/moved` (same origin) accepts, so a
    followed same-origin redirect can be told from a refused one."""

    status: int = 302
    location: str = "/moved"
    hook: Recorder = field(default_factory=Recorder)
    moved: Recorder = field(default_factory=Recorder)

    async def redirect(self, request: web.Request) -> web.Response:
        await self.hook.handle(request)
        return web.Response(status=self.status, headers={"Location": self.location},
                            text=f"moved, see {self.location}")


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Start `app` on a free loopback port; returns the runner and its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def redirecting_app(receiver: RedirectingReceiver) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/hook", receiver.redirect)
    app.router.add_route("*", "/moved", receiver.moved.handle)
    return app


def recording_app(recorder: Recorder) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    return app
