"""What the PostgreSQL tests that run a real bridge share: a ScanOrbit simulator to sweep and
a reader for what the file sink delivered."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld, make_app
from tests.conftest import SIM_SCANORBIT_KEY


@pytest.fixture
async def world() -> AsyncIterator[tuple[ScanOrbitWorld, RunningSim]]:
    """ScanOrbit with no findings yet. It stops within 0.2 s even while a bridge still holds a
    keep-alive connection to it, so a test does not wait out aiohttp's default at teardown."""
    w = ScanOrbitWorld(api_keys={SIM_SCANORBIT_KEY}, seed=9, rate_limit=100_000)
    async with RunningSim(make_app(w), shutdown_timeout=0.2) as sim:
        yield w, sim


def delivered(path: Path) -> list[dict[str, Any]]:
    """The events the file sink wrote to `path`, in order (none before its first write)."""
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []
