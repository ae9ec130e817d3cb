"""Security defaults of the real daemon: TLS verification is never off silently, the admin
endpoints listen on localhost unless told otherwise. (Secrets in logs, metrics, dead letters,
state files and CLI output are scanned at the end of every chaos run: test_chaos.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.admin import AdminConfig
from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld, make_app
from tests.conftest import SIM_SCANORBIT_KEY, base_config, scanorbit_source
from tests.support.daemon import DaemonProcess

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def scanorbit_url() -> AsyncIterator[str]:
    world = ScanOrbitWorld(api_keys={SIM_SCANORBIT_KEY}, seed=3, rate_limit=100_000)
    async with RunningSim(make_app(world), shutdown_timeout=0.2) as sim:
        yield sim.url


@pytest.fixture
async def daemons() -> AsyncIterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        with contextlib.suppress(ProcessLookupError):
            await d.kill()


async def metrics(base: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out = {}
    for line in text.splitlines():
        if line.startswith("bridge_tls_verify_disabled{"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def test_tls_verification_off_is_loud_at_startup_for_every_component(
    tmp_path: Path, scanorbit_url: str, daemons: list[DaemonProcess]
) -> None:
    config: dict[str, Any] = base_config(tmp_path, [scanorbit_source(
        scanorbit_url, interval=3600, full_resweep_interval=0, http={"verify_tls": False})])
    config["log"] = {"format": "json"}
    config["admin"] = {"port": 0}
    # Sinks nobody delivers to (the world is empty): the warning must not wait for traffic.
    config["sinks"] += [
        {"name": "hook", "type": "webhook", "url": "https://127.0.0.1:9/hook",
         "verify_tls": False},
        {"name": "siem", "type": "syslog", "host": "127.0.0.1", "port": 9, "protocol": "tls",
         "verify": False},
    ]
    config["routes"] = {"sinks": ["events", "hook", "siem"]}
    daemon = await DaemonProcess(config, tmp_path).start()
    daemons.append(daemon)
    base = await daemon.admin_url(30)

    lines = daemon.log_lines()
    started = next(i for i, ln in enumerate(lines) if ln.get("event") == "daemon_started")
    loud = [ln for ln in lines[:started] if ln.get("event") == "tls_verification_disabled"]
    assert all(ln["level"] == "warning" for ln in loud), loud
    assert {ln.get("component") for ln in loud} == {"scanorbit", "hook", "siem"}
    assert await metrics(base) == {
        'bridge_tls_verify_disabled{component="scanorbit"}': 1.0,
        'bridge_tls_verify_disabled{component="hook"}': 1.0,
        'bridge_tls_verify_disabled{component="siem"}': 1.0,
    }
    assert await daemon.stop() == 0


def non_loopback_address() -> str | None:
    """An address of this host that other machines could reach, if it has one."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
        address: str = s.getsockname()[0]
        return None if address.startswith("127.") else address
    return None


async def test_admin_endpoints_listen_on_localhost_by_default(
    tmp_path: Path, scanorbit_url: str, daemons: list[DaemonProcess]
) -> None:
    assert AdminConfig().host == "127.0.0.1"
    config = base_config(tmp_path, [scanorbit_source(scanorbit_url, interval=3600)])
    config["log"] = {"format": "json"}
    config["admin"] = {"port": 0}  # no host: the default
    daemon = await DaemonProcess(config, tmp_path).start()
    daemons.append(daemon)
    base = await daemon.admin_url(30)
    host, port = base.removeprefix("http://").rsplit(":", 1)
    assert host == "127.0.0.1"
    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as resp:
        assert resp.status == 200
    if (outside := non_loopback_address()) is not None:
        with pytest.raises(OSError):
            _, writer = await asyncio.wait_for(asyncio.open_connection(outside, int(port)), 5)
            writer.close()
    assert await daemon.stop() == 0
