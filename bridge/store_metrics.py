"""Metrics that only the store knows: outbox depth and age per sink, item counts.

They cost a query, so they are refreshed soon after a sweep or a delivery pokes the refresher
(at most every `min_gap` seconds) and every `every` seconds anyway; the queue figures also go
to `Health`, which shows them in `/readyz` beside each sink's verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Mapping

import structlog

from bridge import metrics
from bridge.health import Health
from bridge.store.base import Store

log = structlog.get_logger(__name__)


class StoreMetrics:
    every = 10.0  # seconds between refreshes when idle
    min_gap = 1.0  # at most this often when sweeps and deliveries poke the refresher

    def __init__(self, store: Store, health: Health,
                 scope_owners: Callable[[], Mapping[str, str]]) -> None:
        self.store = store
        self.health = health
        self._scope_owners = scope_owners  # scope -> source name, of the running config
        self._activity = asyncio.Event()
        self._items_changed = True
        self._item_labels: set[tuple[str, str, str]] = set()

    def poke(self, items_changed: bool) -> None:
        """Something happened: refresh soon (and recount items if a sweep committed)."""
        self._items_changed |= items_changed
        self._activity.set()

    async def run(self) -> None:
        """Refresh until cancelled; a locked or closing store never ends the loop."""
        while True:
            self._activity.clear()
            try:
                await self.refresh_queues()
                if self._items_changed:
                    self._items_changed = False
                    await self.refresh_items()
            except Exception as exc:
                log.warning("metrics_refresh_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.min_gap)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._activity.wait(), self.every)
            self._items_changed |= not self._activity.is_set()  # idle tick: recount anyway

    async def refresh_queues(self) -> None:
        stats = {q.sink: q for q in await self.store.queue_stats()}
        now = time.time()
        for sink in set(stats) | set(self.health.sink_names()):
            q = stats.get(sink)
            depth = q.depth if q is not None else 0  # an emptied queue has no row at all
            oldest = q.oldest_created_at if q is not None else None
            age = max(0.0, now - oldest.timestamp()) if oldest is not None else 0.0
            metrics.OUTBOX_DEPTH.labels(sink).set(depth)
            metrics.OUTBOX_OLDEST_AGE.labels(sink).set(age)
            self.health.sink_queue(sink, depth, round(age, 3))

    async def refresh_items(self) -> None:
        """`bridge_items` by (source, kind, state), summed over a source's scopes; a combination
        that disappeared (every item resolved) drops to 0 instead of keeping its last value."""
        counts: dict[tuple[str, str, str], int] = defaultdict(int)
        owners = self._scope_owners()
        for scope, kind, state, count in await self.store.item_counts():
            counts[(owners.get(scope) or scope.split("/", 1)[0], kind, state)] += count
        for labels in self._item_labels - counts.keys():
            metrics.ITEMS.labels(*labels).set(0)
        for labels, count in counts.items():
            metrics.ITEMS.labels(*labels).set(count)
        self._item_labels |= counts.keys()
