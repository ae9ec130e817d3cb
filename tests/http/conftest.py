"""Fixtures for the vendor HTTP client tests: simulators that record when each request arrived
(the client's waits are measured on the server's clock, never by sleeping in the test), and
logging configured exactly as the daemon does it."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from bridge.http import HttpConfig, HttpContext


@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic() when the simulator received it
    path: str
    headers: dict[str, str]


def record_arrivals(app: web.Application) -> list[Arrival]:
    """Put a recorder in front of a (not yet started) simulator app."""
    arrivals: list[Arrival] = []

    @web.middleware
    async def recorder(request: web.Request, handler: object) -> web.StreamResponse:
        arrivals.append(Arrival(time.monotonic(), request.path, dict(request.headers)))
        return await handler(request)  # type: ignore[operator,no-any-return]

    app.middlewares.insert(0, recorder)
    return arrivals


def gaps(arrivals: list[Arrival]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(arrivals)]


@pytest.fixture
async def http() -> AsyncIterator[HttpContext]:
    context = HttpContext()
    yield context
    await context.close()


def fast(**overrides: object) -> HttpConfig:
    settings: dict[str, object] = {"rate_limit_per_minute": 60_000, "backoff_initial": 0.01,
                                   "backoff_max": 0.05, "max_retries": 2, "timeout": 2.0}
    settings.update(overrides)
    return HttpConfig.model_validate(settings)


