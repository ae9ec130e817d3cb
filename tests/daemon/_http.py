"""Real HTTP against the daemon's admin server, and Prometheus text parsed into numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.waiting import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def get(url: str, token: str | None = None) -> tuple[int, Any]:
    """(status, decoded JSON or text) of one GET."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def scrape(base: str, token: str | None = None) -> Samples:
    status, text = await get(f"{base}/metrics", token)
    assert status == 200, text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One series' value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    """The label sets of every series of `name`."""
    return [dict(labels) for (n, labels) in samples if n == name]


async def wait_metrics(base: str, predicate: Callable[[Samples], bool], what: str,
                       token: str | None = None, timeout: float = 15.0) -> Samples:
    """Scrape until `predicate` holds; fail with `what` after `timeout`."""
    async def showing() -> Samples | None:
        samples = await scrape(base, token)
        return samples if predicate(samples) else None

    return await wait_until(showing, timeout, f"metrics showing {what}", every=0.05)
