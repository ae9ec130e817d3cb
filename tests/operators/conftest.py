"""What the operator-facing tests share: a ScanOrbit simulator, a config file written for the
real `bridge` process, and the command itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld, make_app
from tests.conftest import SIM_SCANORBIT_KEY, base_config, scanorbit_source
from tests.support.daemon import run_cli


@dataclass
class Vendor:
    world: ScanOrbitWorld
    sim: RunningSim


@pytest.fixture
async def vendor() -> AsyncIterator[Vendor]:
    world = ScanOrbitWorld(api_keys={SIM_SCANORBIT_KEY}, seed=19, rate_limit=100_000)
    async with RunningSim(make_app(world), shutdown_timeout=0.2) as sim:
        yield Vendor(world, sim)


def operator_config(tmp_path: Path, vendor: Vendor, **source: Any) -> dict[str, Any]:
    """One ScanOrbit source (every sweep a full one), JSON logs, a file sink `events`."""
    config = base_config(tmp_path, [scanorbit_source(vendor.sim.url, full_resweep_interval=0,
                                                     **source)])
    config["log"] = {"format": "json"}
    return config


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def bridge(*args: str, config: Path, timeout: float = 60.0) -> tuple[int, str, str]:
    """`bridge ARGS --config FILE` as an operator runs it: (exit code, stdout, stderr)."""
    return await run_cli(*args, "--config", str(config), timeout=timeout)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
