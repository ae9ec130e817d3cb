"""Shared fixtures: running vendor simulators, config builders, and the CI rule that a missing
real component fails the run instead of skipping it."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import bridge.logging as bridge_logging
from bridge.sim.aether365 import Aether365World
from bridge.sim.aether365 import make_app as make_aether365_app
from bridge.sim.ayliea import SCOPES as AYLIEA_SCOPES
from bridge.sim.ayliea import AylieaWorld
from bridge.sim.ayliea import make_app as make_ayliea_app
from bridge.sim.common import RunningSim, SimWorld
from bridge.sim.scanorbit import ScanOrbitWorld, make_app
from bridge.store.sqlite import SQLiteStore
from tests.support.postgres import (
    PG_DSN,
    PgSchema,
    PrivateServer,
    drop_schema,
    new_schema_name,
    server_answers,
)
from tests.support.receiver import Receiver

SimPair = tuple[ScanOrbitWorld, RunningSim]
SIM_SCANORBIT_KEY = "sk_live_" + "0123456789abcdef" * 4  # fake sim key
# fake sim keys: one Aether365 tenant each
SIM_AETHER365_KEYS = {"contoso": "ae_live_fake_sim_tests_contoso_0123456789abcdef",
                      "fabrikam": "ae_live_fake_sim_tests_fabrikam_0123456789abcdef"}
SIM_AYLIEA_KEY = "ayliea_pk_fake_sim_tests_0123456789abcdef"  # fake sim key
FAST_HTTP: dict[str, Any] = {"rate_limit_per_minute": 60_000, "backoff_initial": 0.01,
                             "backoff_max": 0.05, "max_retries": 2, "timeout": 2}
IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` (long scenario runs: chaos, receivers killed again and again) run
    first, so with `-n 2` they overlap each other and the short tests fill the gaps, instead
    of one of them starting last and the suite waiting on it alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than the cores we may use. Many tests wait on real processes
    (a daemon's sweep interval, rsyslogd, a killed receiver); measured on 2 quiet cores, 3
    workers ran the suite in 6 min 37 s where 2 took 8 min 10 s."""
    return len(os.sched_getaffinity(0)) + 1


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


def avoidable_429s(world: SimWorld) -> list[str]:
    """429s the real rate limiter served (not scripted faults): our client should have waited."""
    return [f"{s.path} ({s.limit_key.split(':')[0]})" for s in world.stats.served_429
            if not s.injected]


@pytest.fixture
async def aether365() -> AsyncIterator[tuple[Aether365World, RunningSim]]:
    """Two tenants, `tenant-contoso` and `tenant-fabrikam`; fails on any avoidable 429."""
    world = Aether365World(tokens={key: f"tenant-{name}" for name, key in
                                   SIM_AETHER365_KEYS.items()}, seed=11, rate_limit=100_000)
    async with RunningSim(make_aether365_app(world)) as sim:
        yield world, sim
    assert avoidable_429s(world) == []


@pytest.fixture
async def ayliea() -> AsyncIterator[tuple[AylieaWorld, RunningSim]]:
    """One organization whose key has every scope; fails on any avoidable 429."""
    world = AylieaWorld(keys={SIM_AYLIEA_KEY: AYLIEA_SCOPES}, seed=13, rate_limit=100_000)
    async with RunningSim(make_ayliea_app(world)) as sim:
        yield world, sim
    assert avoidable_429s(world) == []


def aether365_source(url: str, tenants: tuple[str, ...] = ("contoso",),
                     **overrides: Any) -> dict[str, Any]:
    source: dict[str, Any] = {
        "name": "aether365", "type": "aether365", "base_url": url, "interval": 60, "jitter": 0,
        "tenants": [{"name": t, "api_key": SIM_AETHER365_KEYS[t]} for t in tenants],
        "http": dict(FAST_HTTP),
    }
    source.update(overrides)
    return source


def ayliea_source(url: str, **overrides: Any) -> dict[str, Any]:
    source: dict[str, Any] = {
        "name": "ayliea", "type": "ayliea", "base_url": url, "api_key": SIM_AYLIEA_KEY,
        "interval": 60, "jitter": 0, "full_resweep_interval": 0, "http": dict(FAST_HTTP),
    }
    source.update(overrides)
    return source


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


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """A stream for `configure_logging`, with global logging state restored afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield io.StringIO()
    for name in bridge_logging._leveled:
        logging.getLogger(name).setLevel(logging.NOTSET)
    bridge_logging._leveled.clear()
    bridge_logging._handler = None
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.configure(**saved)
    structlog.contextvars.clear_contextvars()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A real SQLite state file, open for the test: what the sink worker and the sinks'
    contract suites run against (the store itself runs tests/support/store_contract.py)."""
    s = SQLiteStore(tmp_path / "bridge.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """The suite's scriptable webhook receiver (tests/support/receiver.py), listening."""
    rx = await Receiver().start()
    try:
        yield rx
    finally:
        await rx.stop()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """The real PostgreSQL the suite uses: the one the README's test command starts
    (127.0.0.1:5432, trust auth, database `test`) when it answers; otherwise, where the server's
    programs are installed but that one is not reachable as we need it (a fresh Debian's
    cluster asks for a password), a private server of this worker's own (initdb, trust auth, a
    free port). Under CI=true no server at all fails the tests instead of skipping them."""
    why = asyncio.run(server_answers(PG_DSN))
    if why is None:
        yield PG_DSN
        return
    bindir = PrivateServer.find_bindir()
    if bindir is None:
        message = (f"PostgreSQL at {PG_DSN} does not answer ({why}) and initdb is not installed;"
                   " the README test command installs and starts it")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    server = asyncio.run(PrivateServer.create(bindir))
    try:
        yield server.dsn
    finally:
        asyncio.run(server.destroy())


@pytest.fixture
async def pg(pg_dsn: str) -> AsyncIterator[PgSchema]:
    """A schema of its own in the real PostgreSQL (`pg_dsn`), dropped after the test."""
    target = PgSchema(pg_dsn, new_schema_name())
    try:
        yield target
    finally:
        await drop_schema(pg_dsn, target.schema)
