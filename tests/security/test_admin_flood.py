"""A flood of half-open connections against the admin port of a real `bridge run` (issue 15,
point 5). Before: no header deadline and aiohttp's 3630 s keep-alive let 1,100 silent sockets
hold 1,100 file descriptors, the daemon ran out of them, `/healthz` stopped answering (so a
liveness probe would have restarted a healthy daemon) and asyncio logged a traceback storm.

The daemon runs with a lowered open-files limit (soft = hard, so it cannot raise it), and the
flood is larger than that limit: only a connection cap that sheds idle and half-open
connections, plus a deadline on reading request headers, keeps the probe answering."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import IN_CI
from tests.security._daemon import Vendor, daemon_config, running, scanorbit
from tests.support.daemon import DaemonProcess
from tests.support.limited import LimitedDaemon

pytestmark = pytest.mark.timeout(30)  # the bound for the whole flood test

DAEMON_NOFILE = 512  # below the flood: without a cap, descriptors run out
FLOOD = 1_100
BATCH = 100
PROBE_DEADLINE = 2.0  # seconds; a kubelet's default probe timeout is 1 s, ours is 5 s
# What the flood's sockets send: nothing, a request line and part of the headers, or the
# start of a header that never ends (an authenticated path: auth runs only after headers).
PARTIAL_REQUESTS = (b"", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                    b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer ")


def open_files_limit(limit: int) -> Callable[[], None]:
    """A `preexec_fn` setting RLIMIT_NOFILE (soft and hard) in the child."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


@pytest.fixture
def flood_capacity() -> Iterator[None]:
    """This process holds the whole flood open: raise its own soft limit to make room."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = FLOOD + 512
    if hard != resource.RLIM_INFINITY and hard < needed:
        message = f"RLIMIT_NOFILE hard limit {hard} < {needed}: cannot hold the flood open"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def flood_config(tmp_path: Path, vendor: Vendor, **admin: Any) -> dict[str, Any]:
    config = daemon_config(tmp_path, vendor)
    config["admin"].update(admin)
    return config


async def half_open(host: str, port: int, payload: bytes) -> socket.socket | None:
    """A connected socket that sent `payload` and will never finish its request; None when
    the connection could not even be made in time (a daemon that stopped accepting)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), PROBE_DEADLINE)
        if payload:
            await asyncio.wait_for(loop.sock_sendall(sock, payload), PROBE_DEADLINE)
    except (OSError, TimeoutError):
        sock.close()
        return None
    return sock


async def healthz_within(base: str, deadline: float) -> tuple[int, float]:
    """(status, seconds) of one `/healthz` on a fresh connection, as a kubelet probes."""
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=deadline)
    connector = aiohttp.TCPConnector(force_close=True)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http, \
                http.get(f"{base}/healthz") as resp:
            await resp.read()
            return resp.status, time.monotonic() - started
    except (aiohttp.ClientError, TimeoutError):
        return 0, time.monotonic() - started


async def test_healthz_keeps_answering_through_a_flood_larger_than_the_fd_limit(
    tmp_path: Path, flood_capacity: None
) -> None:
    async with scanorbit() as vendor, running(LimitedDaemon(
            flood_config(tmp_path, vendor), tmp_path,
            preexec=open_files_limit(DAEMON_NOFILE))) as daemon:
        await flood(daemon)


async def flood(daemon: DaemonProcess) -> None:
    """FLOOD half-open connections in batches, `/healthz` probed after each batch."""
    base = await daemon.admin_url()
    host, port = base.removeprefix("http://").rsplit(":", 1)
    mark = daemon.mark()

    started = time.monotonic()
    sockets: list[socket.socket] = []
    probes: list[tuple[int, float]] = []
    try:
        for first in range(0, FLOOD, BATCH):
            opened = await asyncio.gather(*(
                half_open(host, int(port), PARTIAL_REQUESTS[n % len(PARTIAL_REQUESTS)])
                for n in range(first, first + BATCH)))
            sockets += [s for s in opened if s is not None]
            probe = await healthz_within(base, PROBE_DEADLINE)
            probes.append(probe)
            assert probe[0] == 200, (f"/healthz failed after {first + BATCH} flood "
                                     f"connections: {probes}\n{daemon.logs()[-3000:]}")
        flood_seconds = time.monotonic() - started
    finally:
        for sock in sockets:
            sock.close()

    assert all(status == 200 and took < PROBE_DEADLINE for status, took in probes), probes
    # The daemon accepted the whole flood (it sheds connections, it does not stop accepting).
    assert len(sockets) == FLOOD, f"only {len(sockets)} of {FLOOD} connections were accepted"
    assert flood_seconds < 20, flood_seconds

    # The log stays bounded: a few rate-limited warnings, no traceback storm.
    logged = daemon.log_path.read_bytes()[mark:]
    assert b"Traceback" not in logged, logged[:3000]
    assert len(logged) < 16_384, f"{len(logged)} bytes of log during the flood"
    shed = [ln for ln in daemon.log_lines(mark) if ln.get("event") == "admin_connections_shed"]
    assert 1 <= len(shed) <= 5, shed
    assert all(ln["level"] == "warning" and ln["limit"] < DAEMON_NOFILE for ln in shed), shed

    assert (await healthz_within(base, PROBE_DEADLINE))[0] == 200
    assert await daemon.stop() == 0


async def closed_within(reader: asyncio.StreamReader, deadline: float) -> float:
    """Seconds until the daemon closed the connection (read everything up to EOF or a reset)."""
    started = time.monotonic()
    async with asyncio.timeout(deadline):
        with contextlib.suppress(ConnectionResetError):
            while await reader.read(65536):
                pass
    return time.monotonic() - started


async def test_a_slow_header_and_an_idle_keep_alive_are_closed_at_their_deadlines(
    tmp_path: Path
) -> None:
    async with scanorbit() as vendor, running(DaemonProcess(
            flood_config(tmp_path, vendor, header_timeout=1, idle_timeout=1.5),
            tmp_path)) as daemon:
        await deadlines(daemon)


async def deadlines(daemon: DaemonProcess) -> None:
    host, port = (await daemon.admin_url()).removeprefix("http://").rsplit(":", 1)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, int(port))

    # A header dripped one byte at a time is closed at the header deadline, drip or not.
    dripping, drip_writer = await connect()
    started = time.monotonic()
    closed = asyncio.ensure_future(closed_within(dripping, 10))
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 400
    for byte in request:
        if closed.done():
            break
        drip_writer.write(bytes([byte]))
        with contextlib.suppress(ConnectionError):
            await drip_writer.drain()
        await asyncio.wait([closed], timeout=0.05)  # the drip's pace, not a wait for a state
    took = await closed
    assert 0.8 <= time.monotonic() - started < 3, took

    # A connection that never sends anything is closed when idle too long.
    silent, _ = await connect()
    assert 1.2 <= await closed_within(silent, 10) < 4

    # A finished request on a keep-alive connection: closed after the idle timeout.
    reader, writer = await connect()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 200"), status
    assert 1.0 <= await closed_within(reader, 10) < 4
    assert await daemon.stop() == 0
