"""A real `bridge run` against a real ScanOrbit simulator, for the config- and admin-side attacks
(issue 15, points 5, 8 and 10). Context managers rather than fixtures, so each test module
takes what it needs without importing fixtures by name."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld, make_app
from tests.conftest import base_config, scanorbit_source
from tests.daemon.conftest import random_secret
from tests.support.daemon import DaemonProcess


@dataclass
class Vendor:
    world: ScanOrbitWorld
    url: str
    key: str


@contextlib.asynccontextmanager
async def scanorbit() -> AsyncIterator[Vendor]:
    """ScanOrbit on 127.0.0.1 with a fresh `sk_live_…` key (no shared constant to hide behind)."""
    key = random_secret("sk_live_")
    world = ScanOrbitWorld(api_keys={key}, seed=5, rate_limit=100_000)
    async with RunningSim(make_app(world), shutdown_timeout=0.2) as sim:
        yield Vendor(world, sim.url, key)


def daemon_config(tmp_path: Path, vendor: Vendor, **source: Any) -> dict[str, Any]:
    """One ScanOrbit source (the key literal unless `source` says otherwise), JSON logs and the
    admin server on a port of the daemon's choosing (its log says which)."""
    overrides: dict[str, Any] = {"api_key": vendor.key, "interval": 3600, **source}
    config = base_config(tmp_path, [scanorbit_source(vendor.url, **overrides)])
    config["log"] = {"format": "json"}
    config["admin"] = {"port": 0}
    return config


@contextlib.asynccontextmanager
async def running(daemon: DaemonProcess) -> AsyncIterator[DaemonProcess]:
    """`daemon` started; killed on the way out if the test did not stop it (a test failing
    half-way must not leave a child behind)."""
    await daemon.start()
    try:
        yield daemon
    finally:
        with contextlib.suppress(ProcessLookupError):
            await daemon.kill()
