"""One sweep of one scope, top to bottom: source → diff → route → outbox.

Pages stream from the source into the diff; new and changed items are committed together with
their outbox rows in chunks (each chunk one transaction), and the resolutions, the cursor and
the sweep record in a final transaction once completeness is known. A crash before a commit
replays that part of the sweep with the same event ids; a crash after it loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from bridge import metrics
from bridge.diff import Differ, DiffPolicy, StoredItem
from bridge.http import VendorError
from bridge.model import Event, Item, Sweep, utcnow
from bridge.routing import RouteConfig, route
from bridge.secrets import redact
from bridge.sources.base import Source, SourceConfig
from bridge.store.base import Outcome, Store, SweepCommit, SweepRecord

log = structlog.get_logger(__name__)

CHUNK = 2_000


@dataclass(frozen=True, slots=True)
class SweepResult:
    record: SweepRecord
    # The events themselves only when asked for (tests, `bridge once`); a daemon sweeping
    # 100k items keeps just the count.
    events: tuple[Event, ...]
    error: VendorError | None = None


def _outcome(sweep: Sweep) -> Outcome:
    if sweep.skipped:
        return "skipped"
    return "complete" if sweep.complete else "incomplete"


class _Run:
    """State of one sweep in flight: the differ, what was committed, what to report."""

    def __init__(self, source: Source[SourceConfig], scope: str, store: Store,
                 routes: RouteConfig, now: datetime, keep_events: bool) -> None:
        self.source, self.scope, self.store, self.routes = source, scope, store, routes
        self.now, self.keep_events = now, keep_events
        self.differ: Differ | None = None
        self.kept: list[Event] = []
        self._loading: asyncio.Task[dict[tuple[str, str], StoredItem]] | None = None

    def start(self) -> None:
        """Start loading the stored state; it overlaps with fetching the first pages."""
        self._loading = asyncio.create_task(self.store.load_items(self.scope, self.source.kinds))

    async def _differ(self) -> Differ:
        if self.differ is None:
            assert self._loading is not None
            stored = await self._loading
            cfg = self.source.config
            policy = DiffPolicy(cfg.resolve_after_misses, cfg.tracked_fields,
                                dict(self.source.kind_tracked_fields),
                                dict(self.source.change_rules))
            self.differ = Differ(stored, policy, scope=self.scope, source=self.source.name,
                                 vendor=self.source.vendor, now=self.now)
        return self.differ

    async def abandon(self) -> None:
        """The sweep died before finishing: don't leave the state load dangling."""
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            with contextlib.suppress(BaseException):
                await self._loading

    async def emit(self, items: Sequence[Item]) -> None:
        """A page arrived: enrich the unknown, diff, and commit a chunk when enough piled up."""
        differ = await self._differ()
        if self.source.enriches:
            stored, seen = differ.stored, differ.seen
            unseen = [i for i in items if i.active and (i.kind, i.key) not in stored
                      and (i.kind, i.key) not in seen]
            if unseen:
                enriched = {(i.kind, i.key): i for i in await self.source.enrich(self.scope, unseen)}
                items = [enriched.get((i.kind, i.key), i) for i in items]
        differ.feed(items)
        if len(differ.writes) >= CHUNK:
            writes, events = differ.take()
            await self.store.commit_chunk(self.scope, writes, self._route(events))
            self._count(events)

    def _count(self, events: list[Event]) -> None:
        """Count events once they are committed (a failed commit emitted nothing)."""
        for event in events:
            metrics.EVENTS.labels(self.source.name, event.type.value).inc()

    def _route(self, events: list[Event]) -> list[tuple[Event, tuple[str, ...]]]:
        if self.keep_events:
            self.kept.extend(events)
        return [(e, route(self.routes, e).sinks) for e in events]

    async def finish(self, sweep: Sweep, record: SweepRecord) -> SweepRecord:
        differ = await self._differ()
        snapshots = await self.store.load_snapshots(self.scope, differ.absentees(sweep.kinds))
        differ.finish(sweep.kinds, snapshots)
        writes, events = differ.take()
        record = replace(record, items_seen=len(differ.seen), events=differ.event_count)
        sweep_id = await self.store.commit_sweep(
            SweepCommit(record, writes, self._route(events), dict(sweep.cursor)))
        self._count(events)
        return replace(record, id=sweep_id)


async def run_sweep(
    source: Source[SourceConfig],
    scope: str,
    store: Store,
    routes: RouteConfig,
    *,
    now: datetime | None = None,
    keep_events: bool = False,
) -> SweepResult:
    """Poll, diff, route and commit one scope. Vendor trouble becomes a recorded failed sweep."""
    started = utcnow()
    clock = time.monotonic()
    run = _Run(source, scope, store, routes, now or started, keep_events)
    cursor = await store.load_cursor(scope)
    run.start()
    requests_before = source.requests
    try:
        sweep = await source.stream(scope, cursor, run.emit)
    except VendorError as exc:
        record = SweepRecord(scope=scope, source=source.name, started_at=started,
                             finished_at=utcnow(), outcome="failed", error=redact(str(exc)),
                             requests=source.requests - requests_before)
        record = await run.finish(Sweep(scope=scope, items=(), kinds={}), record)
        metrics.SWEEPS.labels(source.name, "failed").inc()
        log.error("sweep_failed", source=source.name, scope=scope, error=str(exc), kind=exc.kind)
        return SweepResult(record, tuple(run.kept), exc)
    except BaseException:
        await run.abandon()
        raise

    outcome = _outcome(sweep)
    record = SweepRecord(scope=scope, source=source.name, started_at=started,
                         finished_at=utcnow(), outcome=outcome,
                         requests=source.requests - requests_before,
                         notes=tuple(redact(n) for n in sweep.notes))
    record = await run.finish(sweep, record)

    metrics.SWEEPS.labels(source.name, outcome).inc()
    metrics.SWEEP_SECONDS.labels(source.name).observe(time.monotonic() - clock)
    if outcome in ("complete", "skipped"):
        metrics.LAST_SUCCESSFUL_SWEEP.labels(source.name).set(time.time())
    assert run.differ is not None
    log_method = log.warning if outcome == "incomplete" else log.info
    log_method("sweep_done", source=source.name, scope=scope, outcome=outcome,
               seen=record.items_seen, events=record.events, requests=record.requests,
               notes=list(sweep.notes)[:5], sweep_id=record.id)
    return SweepResult(record, tuple(run.kept))
