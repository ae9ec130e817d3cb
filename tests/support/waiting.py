"""Wait for a condition with a deadline: the one alternative to sleeping and hoping, for the
whole suite."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(predicate: Callable[[], T | Awaitable[T | None] | None], timeout: float = 10.0,
                     what: str = "", *, every: float = 0.01,
                     alive: Callable[[], str | None] | None = None) -> T:
    """Poll `predicate` (sync or async) every `every` seconds until it returns something true,
    and return that. Fails after `timeout` seconds, or at once when `alive()` reports that
    something the condition depends on died (a daemon that exited will never log the line)."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if alive is not None and (why := alive()):
            raise AssertionError(f"{what or predicate}: {why}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g}s: {what or predicate}")
        await asyncio.sleep(every)
