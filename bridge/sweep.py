"""One sweep of one scope, top to bottom: source → diff → route → outbox.

Everything the sweep decides is committed in one store transaction; a crash before the commit
replays the sweep next time, a crash after it loses nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from bridge import metrics
from bridge.diff import DiffPolicy, diff
from bridge.http import VendorError
from bridge.model import Event, Sweep, utcnow
from bridge.routing import RouteConfig, route
from bridge.sources.base import Source, SourceConfig
from bridge.store.base import Outcome, Store, SweepCommit, SweepRecord

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SweepResult:
    record: SweepRecord
    events: tuple[Event, ...]
    error: VendorError | None = None


def _outcome(sweep: Sweep) -> Outcome:
    if sweep.skipped:
        return "skipped"
    return "complete" if sweep.complete else "incomplete"


async def run_sweep(
    source: Source[SourceConfig],
    scope: str,
    store: Store,
    routes: RouteConfig,
    *,
    now: datetime | None = None,
) -> SweepResult:
    """Poll, diff, route and commit one scope. Vendor trouble becomes a recorded failed sweep."""
    started = utcnow()
    clock = time.monotonic()
    cursor = await store.load_cursor(scope)
    requests_before = source.requests
    try:
        sweep = await source.poll(scope, cursor)
    except VendorError as exc:
        record = SweepRecord(scope=scope, source=source.name, started_at=started,
                             finished_at=utcnow(), outcome="failed", error=str(exc),
                             requests=source.requests - requests_before)
        await store.commit_sweep(SweepCommit(record))
        metrics.SWEEPS.labels(source.name, "failed").inc()
        log.error("sweep_failed", source=source.name, scope=scope, error=str(exc), kind=exc.kind)
        return SweepResult(record, (), exc)

    kinds = set(sweep.kinds) | {i.kind for i in sweep.items}
    stored = await store.load_items(scope, kinds)
    unseen = [i for i in sweep.items if i.active and (i.kind, i.key) not in stored]
    if unseen:
        enriched = {(i.kind, i.key): i for i in await source.enrich(scope, unseen)}
        if enriched:
            sweep = replace(sweep, items=tuple(enriched.get((i.kind, i.key), i) for i in sweep.items))

    policy = DiffPolicy(source.config.resolve_after_misses, source.config.tracked_fields)
    result = diff(stored, sweep, policy, source=source.name, vendor=source.vendor,
                  now=now or utcnow())
    deliveries = [(e, route(routes, e).sinks) for e in result.events]
    outcome = _outcome(sweep)
    record = SweepRecord(
        scope=scope, source=source.name, started_at=started, finished_at=utcnow(),
        outcome=outcome, items_seen=result.seen, events=len(result.events),
        requests=source.requests - requests_before, notes=sweep.notes,
    )
    record = replace(record, id=await store.commit_sweep(
        SweepCommit(record, result.writes, deliveries, dict(sweep.cursor))))

    metrics.SWEEPS.labels(source.name, outcome).inc()
    metrics.SWEEP_SECONDS.labels(source.name).observe(time.monotonic() - clock)
    if outcome in ("complete", "skipped"):
        metrics.LAST_SUCCESSFUL_SWEEP.labels(source.name).set(time.time())
    for event in result.events:
        metrics.EVENTS.labels(source.name, event.type.value).inc()
    log_method = log.warning if outcome == "incomplete" else log.info
    log_method("sweep_done", source=source.name, scope=scope, outcome=outcome,
               seen=result.seen, events=len(result.events), requests=record.requests,
               notes=list(sweep.notes)[:5], sweep_id=record.id)
    return SweepResult(record, tuple(result.events))
