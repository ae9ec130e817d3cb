"""Shared fixtures: running vendor simulators, config builders, and the CI rule that a missing
real component fails the run instead of skipping it."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld, make_app

SimPair = tuple[ScanOrbitWorld, RunningSim]
SIM_SCANORBIT_KEY = "sk_live_" + "0123456789abcdef" * 4  # fake sim key
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_binary(name: str, *candidates: str) -> str:
    """Path of a real component; under CI=true its absence fails the test, never skips it."""
    for candidate in (name, *candidates):
        found = shutil.which(candidate) or (candidate if os.path.exists(candidate) else None)
        if found:
            return found
    message = f"{name} is not installed (the README test command installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
async def scanorbit() -> AsyncIterator[tuple[ScanOrbitWorld, RunningSim]]:
    world = ScanOrbitWorld(api_keys={SIM_SCANORBIT_KEY}, seed=7, rate_limit=100_000)
    async with RunningSim(make_app(world)) as sim:
        yield world, sim


def scanorbit_source(url: str, **overrides: Any) -> dict[str, Any]:
    source: dict[str, Any] = {
        "name": "scanorbit",
        "type": "scanorbit",
        "base_url": url,
        "api_key": SIM_SCANORBIT_KEY,
        "interval": 60,
        "jitter": 0,
        "http": {"rate_limit_per_minute": 60_000, "backoff_initial": 0.01, "backoff_max": 0.05,
                 "max_retries": 2, "timeout": 2},
    }
    source.update(overrides)
    return source


def base_config(tmp_path: Path, sources: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "state": {"path": str(tmp_path / "state" / "bridge.db")},
        "admin": {"enabled": False},
        "sources": sources,
        "sinks": [{"name": "events", "type": "file", "path": str(tmp_path / "events.jsonl")}],
        "routes": {"sinks": ["events"]},
    }
    config.update(extra)
    return config
