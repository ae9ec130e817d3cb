"""Fixtures for the simulator tests: each vendor served over real HTTP, and a fake clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bridge.sim import (
    Aether365World,
    AylieaWorld,
    RunningSim,
    ScanOrbitWorld,
    make_aether365_app,
    make_ayliea_app,
    make_scanorbit_app,
)
from bridge.sim.ayliea import SCOPES

SO_KEY = "sk_live_" + "fedcba9876543210" * 4  # fake sim test key
SO_KEY_2 = "sk_live_" + "0123456789abcdef" * 4  # fake sim test key, same org
AE_TOKEN_A = "ae_live_fake_sim_test_tenant_a"
AE_TOKEN_B = "ae_live_fake_sim_test_tenant_b"
AY_KEY = "ayliea_pk_fake_sim_test_all_scopes"
AY_KEY_SCORES = "ayliea_pk_fake_sim_test_scores_only"


class FakeClock:
    """A monotonic clock tests advance by hand: rate-limit windows without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class Client:
    """A thin aiohttp client for one simulator: GET a path, get status, headers and body."""

    def __init__(self, session: aiohttp.ClientSession, base: str,
                 headers: dict[str, str] | None = None) -> None:
        self.session = session
        self.base = base
        self.headers = headers or {}

    async def get(self, path: str, headers: dict[str, str] | None = None,
                  **params: Any) -> Reply:
        async with self.session.get(
            self.base + path, params={k: str(v) for k, v in params.items()},
            headers=self.headers if headers is None else headers,
        ) as resp:
            return Reply(resp.status, dict(resp.headers), await resp.text())

    async def json(self, path: str, **params: Any) -> Any:
        reply = await self.get(path, **params)
        assert reply.status == 200, reply.text
        return reply.json()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # force_close: a reset must reach the test, not be retried on a fresh keep-alive socket.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=5),
    ) as s:
        yield s


@pytest.fixture
def so_world(clock: FakeClock) -> ScanOrbitWorld:
    return ScanOrbitWorld(api_keys={SO_KEY, SO_KEY_2}, seed=1, clock=clock)


@pytest.fixture
async def so(so_world: ScanOrbitWorld, session: aiohttp.ClientSession) -> AsyncIterator[Client]:
    async with RunningSim(make_scanorbit_app(so_world)) as sim:
        yield Client(session, sim.url, {"X-API-Key": SO_KEY})


@pytest.fixture
def ae_world(clock: FakeClock) -> Aether365World:
    return Aether365World(tokens={AE_TOKEN_A: "tenant-a", AE_TOKEN_B: "tenant-b"}, seed=2,
                          clock=clock)


@pytest.fixture
async def ae(ae_world: Aether365World, session: aiohttp.ClientSession) -> AsyncIterator[Client]:
    async with RunningSim(make_aether365_app(ae_world)) as sim:
        yield Client(session, sim.url, {"Authorization": f"Bearer {AE_TOKEN_A}"})


@pytest.fixture
def ay_world(clock: FakeClock) -> AylieaWorld:
    return AylieaWorld(keys={AY_KEY: SCOPES, AY_KEY_SCORES: {"scores:read"}}, seed=3,
                       clock=clock)


@pytest.fixture
async def ay(ay_world: AylieaWorld, session: aiohttp.ClientSession) -> AsyncIterator[Client]:
    async with RunningSim(make_ayliea_app(ay_world)) as sim:
        yield Client(session, sim.url, {"X-API-Key": AY_KEY})
