"""Fixtures for tests against the real `bridge run` process: a ScanOrbit simulator with a
realistic per-test key, a webhook receiver, a fake NOTIFY_SOCKET, and a daemon factory that
never leaves a child process behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import string
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld, make_app
from tests.conftest import base_config, scanorbit_source
from tests.support.daemon import DaemonProcess

ALNUM = string.ascii_letters + string.digits


def random_secret(prefix: str, n: int = 40) -> str:
    return prefix + "".join(secrets.choice(ALNUM) for _ in range(n))


@dataclass
class Vendor:
    world: ScanOrbitWorld
    sim: RunningSim
    key: str


@web.middleware
async def echo_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Error answers quote the key the caller sent, as some real vendor APIs do: every
    vendor error path then has a secret in it for the daemon to redact."""
    response = await handler(request)
    if response.status >= 400 and isinstance(response, web.Response) and response.body:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            body = json.loads(response.body)  # type: ignore[arg-type]
            body["message"] = f"{body.get('message', '')} (X-API-Key: " \
                              f"{request.headers.get('X-API-Key', '')})"
            response.body = json.dumps(body).encode()
    return response


@pytest.fixture
async def vendor() -> AsyncIterator[Vendor]:
    """ScanOrbit with a fresh `sk_live_…` key, so a leak cannot hide behind a shared constant."""
    key = random_secret("sk_live_")
    world = ScanOrbitWorld(api_keys={key}, seed=11, rate_limit=100_000)
    app = make_app(world)
    app.middlewares.insert(0, echo_key)  # outermost: sees the simulator's own error answers
    async with RunningSim(app, shutdown_timeout=0.2) as sim:
        yield Vendor(world, sim, key)


def daemon_config(tmp_path: Path, vendor: Vendor, hook: str | None = None,
                  **source: Any) -> dict[str, Any]:
    """One ScanOrbit source swept every second (each sweep a full one), JSON logs, the admin
    server on a port of its choosing, and a webhook sink when `hook` is given."""
    overrides: dict[str, Any] = {"api_key": vendor.key, "interval": 1,
                                 "full_resweep_interval": 0, **source}
    config = base_config(tmp_path, [scanorbit_source(vendor.sim.url, **overrides)])
    config["log"] = {"format": "json"}
    config["admin"] = {"port": 0}
    if hook is not None:
        config["sinks"] = [{"name": "hook", "type": "webhook", "url": hook, "batch_size": 10,
                            "concurrency": 4, "backoff_initial": 0.05, "backoff_max": 0.2,
                            "timeout": 10}]
        config["routes"] = {"sinks": ["hook"]}
    return config


def free_port() -> int:
    """A port nothing listens on right now (for a test that needs a fixed admin port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


StartDaemon = Callable[..., Awaitable[DaemonProcess]]


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[StartDaemon]:
    """`await start_daemon(config, env=..., grace=...)`; whatever still runs at the end is
    killed (a test that fails half-way must not leak a daemon into the next one)."""
    started: list[DaemonProcess] = []

    async def start(config: dict[str, Any], *, env: dict[str, str] | None = None,
                    grace: float = 5.0) -> DaemonProcess:
        daemon = await DaemonProcess(config, tmp_path, env=env, grace=grace).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        await daemon.kill()


@dataclass
class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's."""

    sock: socket.socket
    path: str

    async def wait_for(self, state: str, timeout: float = 15.0) -> list[str]:
        """Datagrams received until one contains the line `state` (e.g. "READY=1")."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {state} within {timeout}s; got {seen}")
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), left)
            seen.append(data.decode())
            if state in seen[-1].splitlines():
                return seen


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    directory = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")  # sun_path is 108 bytes at most
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    try:
        yield NotifySocket(sock, path)
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)
