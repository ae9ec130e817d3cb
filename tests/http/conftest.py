"""Fixtures for the vendor HTTP client tests: simulators that record when each request arrived
(the client's waits are measured on the server's clock, never by sleeping in the test), and
logging configured exactly as the daemon does it."""

from __future__ import annotations

import io
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import structlog
from aiohttp import web

import bridge.logging as bridge_logging
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
