"""One sweep of one scope, top to bottom: source → diff → route → dispatch → outbox.

Pages stream from the source into the diff; new and changed items are committed together with
their outbox rows in chunks (each chunk one transaction), and the resolutions, the cursor and
the sweep record in a final transaction once completeness is known. A crash before a commit
replays that part of the sweep with the same event ids; a crash after it loses nothing.

Between routing and the outbox, `Dispatch` decides what each chosen sink is actually sent: a
scope's first sweep follows its baseline mode (bridge/baseline.py), then silences apply
(bridge/silences.py). An event a sink is not sent is committed as a `Muted` row (with why)
instead of an outbox row, in the same transaction, so the audit trail and the state stay
complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

import structlog

from bridge import metrics, progress, runtime
from bridge.baseline import BASELINE_CURSOR, Baseline, mode_for, source_cursor, summary_event
from bridge.diff import Differ, DiffPolicy, StoredItems
from bridge.http import VendorError
from bridge.model import Event, Item, Sweep, utcnow
from bridge.progress import ScopeProgress
from bridge.routing import RememberedRoutes, RouteConfig
from bridge.secrets import redact
from bridge.silences import Muting, SilenceSettings, load_muting
from bridge.sources.base import Source, SourceConfig
from bridge.store.base import Muted, Outcome, Store, SweepCommit, SweepRecord

log = structlog.get_logger(__name__)

# Item writes per chunk (one transaction, with the chunk's outbox and muted rows). Every commit
# rewrites the pages of the items index that its random-keyed inserts touch, nearly all of them
# once the index outgrows a chunk: at 300,000 findings 2,000-item chunks spent 10-14 s of the
# writer thread's CPU on 150 commits, 5,000-item chunks 9 s on 60 (first sweep 7-20% faster in
# wall time against the same run's floor). Not more: a chunk and the one committing are held in
# memory (196 MB peak at 300k with 5,000, 245 MB with 10,000, against 168 MB with 2,000).
CHUNK = 5_000


Routed = tuple[Event, tuple[str, ...]]  # an event and the sinks it is delivered to


@dataclass(frozen=True)
class Dispatch:
    """What happens to routed events before the outbox: the route tree, each sink's kind of
    first-sweep baseline (`SinkConfig.default_baseline`, by sink name), and how silences
    treat `resolved`."""

    routes: RouteConfig
    sink_baselines: Mapping[str, Baseline] = field(default_factory=dict)
    silences: SilenceSettings = field(default_factory=SilenceSettings)
    @functools.cached_property
    def decide(self) -> RememberedRoutes:
        """`route(self.routes, event)`, remembered per combination of the matched fields."""
        return RememberedRoutes(self.routes)

    def sinks(self, event: Event) -> tuple[str, ...]:
        return self.decide(event).sinks


@dataclass(frozen=True, slots=True)
class SweepResult:
    record: SweepRecord
    # The events themselves only when asked for (tests, `bridge once`); a daemon sweeping
    # 100k items keeps just the count.
    events: tuple[Event, ...]
    error: VendorError | None = None
    # Also only when asked for: what each event is delivered to (summaries included), and
    # what was muted instead.
    deliveries: tuple[Routed, ...] = ()
    muted: tuple[Muted, ...] = ()
    # This sweep was (part of) its scope's first-sweep baseline.
    baseline: bool = False
    # Items re-baselined silently because their tracked fields were reconfigured (bridge/diff.py).
    rebaselined: int = 0


def _outcome(sweep: Sweep) -> Outcome:
    if sweep.skipped:
        return "skipped"
    return "complete" if sweep.complete else "incomplete"


BaselineState = Literal["pending", "done", "unmarked"]


async def baseline_state(store: Store, scope: str, cursor: Mapping[str, str]) -> BaselineState:
    """`pending` until a sweep of the scope commits complete or incomplete; `unmarked` for a
    scope swept before baselines existed (done, and marked as such by its next commit)."""
    if BASELINE_CURSOR in cursor:
        return "done"
    swept = await store.sweeps(scope, 1, outcomes=("complete", "incomplete"))
    return "unmarked" if swept else "pending"


class _Run:
    """State of one sweep in flight: the differ, what was committed, what to report."""

    def __init__(self, source: Source[SourceConfig], scope: str, store: Store,
                 dispatch: Dispatch, now: datetime, keep_events: bool,
                 baseline: BaselineState, muting: Muting, seen: ScopeProgress,
                 on_commit: Callable[[], None] | None = None) -> None:
        self.source, self.scope, self.store, self.dispatch = source, scope, store, dispatch
        self.now, self.keep_events, self.baseline = now, keep_events, baseline
        self.muting, self.seen, self.on_commit = muting, seen, on_commit
        # The chunk being committed while the next pages are diffed: at most one, so chunks
        # commit in order and a failed commit stops the sweep at the next chunk or at `finish`.
        self._committing: tuple[asyncio.Future[None], list[Event], list[Muted]] | None = None
        self.differ: Differ | None = None
        self.kept: list[Event] = []
        self.kept_deliveries: list[Routed] = []
        self.kept_muted: list[Muted] = []
        self.muted_count = 0
        self._loading: asyncio.Task[StoredItems] | None = None

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
        """The sweep died before finishing: don't leave the state load dangling (a chunk
        already handed to the store commits whole or not at all, whatever happens here)."""
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            with contextlib.suppress(BaseException):
                await self._loading
        if self._committing is not None:
            committing, self._committing = self._committing[0], None
            with contextlib.suppress(BaseException):
                await committing

    async def emit(self, items: Sequence[Item]) -> None:
        """A page arrived: enrich the unknown, diff, and commit a chunk when enough piled up."""
        self.seen.items += len(items)
        differ = await self._differ()
        if self.source.enriches:
            unseen = [i for i in items if i.active and not differ.known(i.kind, i.key)]
            if unseen:
                enriched = {(i.kind, i.key): i for i in await self.source.enrich(self.scope, unseen)}
                items = [enriched.get((i.kind, i.key), i) for i in items]
        differ.feed(items)
        if len(differ.writes) >= CHUNK:
            writes, events = differ.take()
            deliveries, muted = self._dispatch(events)
            await self._settle()
            self._committing = (asyncio.ensure_future(
                self.store.commit_chunk(self.scope, writes, deliveries, muted)), events, muted)

    async def _settle(self) -> None:
        """Wait for the chunk in flight; its events count (and the sinks are told) once it
        is on disk. A failed commit raises here: the sweep fails and nothing after it commits."""
        if self._committing is not None:
            (committing, events, muted), self._committing = self._committing, None
            await committing
            self._count(events, muted)
            if events and self.on_commit is not None:
                self.on_commit()

    def _count(self, events: list[Event], muted: list[Muted]) -> None:
        """Count events once they are committed (a failed commit emitted nothing)."""
        by_type: dict[str, int] = {}
        for event in events:
            by_type[event.type] = by_type.get(event.type, 0) + 1
        for type_, count in by_type.items():
            metrics.child(metrics.EVENTS, self.source.name, type_).inc(count)
        self.muted_count += len(muted)

    def _dispatch(self, events: list[Event]) -> tuple[list[Routed], list[Muted]]:
        """Route each event, then take away the sinks its scope's baseline mutes for it, then
        the rest if a silence mutes it (judged at this moment: a silence may end mid-sweep)."""
        deliveries: list[Routed] = []
        muted: list[Muted] = []
        source_mode, defaults = self.source.config.baseline, self.dispatch.sink_baselines
        now = utcnow()
        for event in events:
            decision = self.dispatch.decide(event)
            sinks = decision.sinks
            if self.baseline == "pending":
                kept: list[str] = []
                for sink in sinks:
                    mode = mode_for(sink, decision.baselines.get(sink), source_mode, defaults)
                    if mode == "deliver":
                        kept.append(sink)
                    else:
                        muted.append(Muted.of(event, sink, "baseline:summary" if mode == "summary"
                                              else "baseline:suppress"))
                sinks = tuple(kept)
            if sinks and (silence := self.muting.silencing(event, now)) is not None:
                muted += [Muted.of(event, sink, "silence", silence.id) for sink in sinks]
                sinks = ()
            deliveries.append((event, sinks))
        self._keep(events, deliveries, muted)
        return deliveries, muted

    def _keep(self, events: list[Event], deliveries: list[Routed], muted: list[Muted]) -> None:
        if self.keep_events:
            self.kept.extend(events)
            self.kept_deliveries.extend(deliveries)
            self.kept_muted.extend(muted)

    async def _summaries(self, final: list[Muted]) -> list[Routed]:
        """The baseline's `summary` events, one per sink: what the committed chunks muted
        for a summary (earlier sweeps of a pending baseline included) plus this last part."""
        counts = await self.store.muted_counts(self.scope, "baseline:summary")
        for m in final:
            if m.reason == "baseline:summary":
                per_sink = counts.setdefault(m.sink, {})
                per_sink[(m.kind, m.severity)] = per_sink.get((m.kind, m.severity), 0) + 1
        return [(summary_event(scope=self.scope, source=self.source.name,
                               vendor=self.source.vendor, sink=sink, counts=counts[sink]),
                 (sink,)) for sink in sorted(counts)]

    async def finish(self, sweep: Sweep, record: SweepRecord) -> SweepRecord:
        differ = await self._differ()
        await self._settle()
        snapshots = await self.store.load_snapshots(self.scope, differ.absentees(sweep.kinds))
        differ.finish(sweep.kinds, snapshots)
        writes, events = differ.take()
        deliveries, muted = self._dispatch(events)
        cursor = dict(sweep.cursor)
        if self.baseline == "unmarked" or (self.baseline == "pending"
                                           and record.outcome in ("complete", "incomplete")):
            cursor[BASELINE_CURSOR] = self.now.isoformat()
            if self.baseline == "pending":
                summaries = await self._summaries(muted)
                deliveries += summaries
                self._keep([], summaries, [])
                log.info("baseline_done", source=self.source.name, scope=self.scope,
                         muted=self.muted_count + len(muted), summaries=len(summaries))
        record = replace(record, items_seen=len(differ.seen), events=differ.event_count)
        sweep_id = await self.store.commit_sweep(
            SweepCommit(record, writes, deliveries, cursor, muted))
        self._count(events, muted)
        if differ.rebaselined:
            log.info("tracked_fields_rebaselined", source=self.source.name, scope=self.scope,
                     items=differ.rebaselined)
        return replace(record, id=sweep_id)

    def result(self, record: SweepRecord, error: VendorError | None = None) -> SweepResult:
        return SweepResult(record, tuple(self.kept), error, tuple(self.kept_deliveries),
                           tuple(self.kept_muted), self.baseline == "pending",
                           self.differ.rebaselined if self.differ is not None else 0)


# Sweeps smaller than this leave too little behind to be worth a trim (`return_freed_memory`).
TRIM_AFTER_ITEMS = 10_000


async def run_sweep(
    source: Source[SourceConfig],
    scope: str,
    store: Store,
    dispatch: Dispatch,
    *,
    now: datetime | None = None,
    keep_events: bool = False,
    on_commit: Callable[[], None] | None = None,
) -> SweepResult:
    """Poll, diff, route and commit one scope. Vendor trouble becomes a recorded failed sweep.
    `on_commit` is called after each chunk that committed events (sink workers can start
    delivering while the sweep goes on)."""
    runtime.tune_for_sweeps()
    requests_before = source.requests(scope)

    def requests() -> int:
        """Vendor requests this sweep has made so far (its progress line and its record)."""
        return source.requests(scope) - requests_before

    with progress.sweeping(scope, source.name, requests) as seen:
        result = await _sweep(source, scope, store, dispatch, now, keep_events, seen, on_commit,
                              requests)
        seen.note = result.record.error or (result.record.notes[0] if result.record.notes else "")
        seen.outcome = result.record.outcome
    if result.record.items_seen >= TRIM_AFTER_ITEMS:
        runtime.return_freed_memory()
    return result


async def _sweep(source: Source[SourceConfig], scope: str, store: Store, dispatch: Dispatch,
                 now: datetime | None, keep_events: bool, seen: ScopeProgress,
                 on_commit: Callable[[], None] | None, requests: Callable[[], int]
                 ) -> SweepResult:
    started = utcnow()
    clock = time.monotonic()
    cursor = await store.load_cursor(scope)
    run = _Run(source, scope, store, dispatch, now or started, keep_events,
               await baseline_state(store, scope, cursor),
               await load_muting(store, dispatch.silences), seen, on_commit)
    run.start()
    try:
        sweep = await source.stream(scope, source_cursor(cursor), run.emit)
    except VendorError as exc:
        record = SweepRecord(scope=scope, source=source.name, started_at=started,
                             finished_at=utcnow(), outcome="failed", error=redact(str(exc)),
                             requests=requests())
        record = await run.finish(Sweep(scope=scope, items=(), kinds={}), record)
        metrics.SWEEPS.labels(source.name, "failed").inc()
        log.error("sweep_failed", source=source.name, scope=scope, error=str(exc), kind=exc.kind)
        return run.result(record, exc)
    except BaseException:
        await run.abandon()
        raise

    outcome = _outcome(sweep)
    record = SweepRecord(scope=scope, source=source.name, started_at=started,
                         finished_at=utcnow(), outcome=outcome,
                         requests=requests(),
                         notes=tuple(redact(n) for n in sweep.notes))
    record = await run.finish(sweep, record)

    metrics.SWEEPS.labels(source.name, outcome).inc()
    metrics.SWEEP_SECONDS.labels(source.name).observe(time.monotonic() - clock)
    if outcome in ("complete", "skipped"):
        metrics.LAST_SUCCESSFUL_SWEEP.labels(source.name).set(time.time())
    assert run.differ is not None
    log_method = log.warning if outcome == "incomplete" else log.info
    log_method("sweep_done", source=source.name, scope=scope, outcome=outcome,
               seen=record.items_seen, events=record.events, muted=run.muted_count,
               requests=record.requests,
               notes=list(sweep.notes)[:5], sweep_id=record.id)
    return run.result(record)
