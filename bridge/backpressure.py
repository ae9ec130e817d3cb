"""Bounded disk, never silent loss: sweeps pause while the outbox is full or the disk is low.

The outbox is durable, so a receiver that is down for days grows it without bound until the
disk fills and everything stops at once. Like Vector's and Fluent Bit's bounded buffers we
set a limit, but where they drop or block the producer, our producer is a poll: a sweep that
does not run loses nothing (the vendor still has every finding, and the next sweep after the
backlog drains sees them all). So while `state.max_outbox_events` undelivered events wait,
or the state's disk has less than `state.min_free_disk_bytes` free, sweeps do not start;
`/readyz` is degraded with the reason, `bridge_sweeps_paused` is 1, and one log line marks the
start and one the end. Delivery keeps draining meanwhile, and the next sweep after it has
brought the outbox under the limit runs as usual.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import structlog

from bridge import metrics
from bridge.store.base import StateConfig, Store

log = structlog.get_logger(__name__)


@dataclass
class BackPressure:
    """Decides, before each sweep, whether sweeps must wait; remembers the verdict to log
    only its changes."""

    state: StateConfig
    paused: str | None = None  # the reason, while paused

    @property
    def configured(self) -> bool:
        return self.state.max_outbox_events is not None or self.state.min_free_disk_bytes > 0

    async def reason(self, store: Store) -> str | None:
        """Why sweeps must wait now, or None; logs and sets the metric when that changes."""
        why = await self._why(store) if self.configured else None
        if why != self.paused:
            if why is None:
                log.info("sweeps_resumed", was=self.paused)
            elif self.paused is None:
                log.warning("sweeps_paused", reason=why,
                            hint="nothing is dropped: the vendors are read again once "
                                 "delivery has drained the outbox")
            self.paused = why
        # Set every time: a reloaded pipeline's first check must not leave the gauge as the
        # previous pipeline left it.
        metrics.SWEEPS_PAUSED.set(int(why is not None))
        return why

    async def _why(self, store: Store) -> str | None:
        cap = self.state.max_outbox_events
        if cap is not None:
            waiting = sum(q.depth for q in await store.queue_stats())
            if waiting >= cap:
                return (f"outbox holds {waiting} undelivered events (state.max_outbox_events "
                        f"{cap}): sweeps wait for delivery")
        floor, where = self.state.min_free_disk_bytes, self.state.disk_path()
        if floor and where is not None:
            try:
                free = shutil.disk_usage(where).free
            except OSError:
                return None  # the store reports its own disk trouble
            if free < floor:
                return (f"{free} bytes free on the state's disk, under state.min_free_disk_bytes "
                        f"({floor}): sweeps wait")
        return None
