"""Everything built from one config: sources, sink workers and the sweep schedule.

A SIGHUP builds a new `Pipeline` from the re-read file and swaps it in only if it validates; the
store and the admin server outlive pipelines (they belong to the `Daemon`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bridge.backpressure import BackPressure
from bridge.config import BridgeConfig
from bridge.health import Health, SinkVerdict
from bridge.http import HttpContext, TokenBucket
from bridge.model import utcnow
from bridge.outbox import SinkWorker
from bridge.silences import load_muting, settle
from bridge.sources.base import Source, SourceConfig
from bridge.store.base import Store, StoreCorruptError, StoreError
from bridge.store.units import ownership_of, scope_unit
from bridge.sweep import Dispatch, SweepResult, run_sweep

log = structlog.get_logger(__name__)
SETTLE_JOB = "settle-silences"


@dataclass
class Pipeline:
    """Sources, sink workers and their schedule, built from one config."""

    config: BridgeConfig
    store: Store
    health: Health
    http: HttpContext = field(default_factory=HttpContext)
    sources: dict[str, Source[SourceConfig]] = field(default_factory=dict)
    workers: dict[str, SinkWorker] = field(default_factory=dict)
    scheduler: AsyncIOScheduler | None = None
    stop_workers: asyncio.Event = field(default_factory=asyncio.Event)
    worker_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    inflight: dict[asyncio.Task[Any], str] = field(default_factory=dict)  # sweep → scope
    # Held by a scope's sweep; all of them by a silence's settlement (see `_no_sweeps`).
    scope_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    stopping: bool = False
    # Keep each sweep's events in its result (tests, `bridge once`); the daemon keeps counts.
    keep_events: bool = False
    # Called after a sweep or a delivery, so the daemon refreshes the queue metrics promptly.
    on_activity: Callable[[bool], None] | None = None
    # Called when the state store turns out corrupt or too new: the daemon stops (exit 1)
    # instead of writing to state it cannot trust.
    on_fatal: Callable[[str], None] | None = None
    # Sweeps wait while the outbox is full or the disk low (bridge/backpressure.py).
    backpressure: BackPressure | None = None

    @classmethod
    def build(cls, config: BridgeConfig, store: Store, health: Health, *,
              buckets: Mapping[str, TokenBucket] | None = None) -> Pipeline:
        """`buckets`: the rate-limit buckets of the pipeline this one replaces (a reload);
        the scopes it shares with it keep theirs (`HttpContext.inherited`)."""
        p = cls(config, store, health, http=HttpContext(inherited=buckets or {}),
                backpressure=BackPressure(config.state))
        for sink_config in config.sinks:
            p.workers[sink_config.name] = SinkWorker(sink_config.build(), store, p._sink_verdict,
                                                     config.routes)
        for source_config in config.sources:
            p.sources[source_config.name] = source_config.build(p.http)
        return p

    @property
    def dispatch(self) -> Dispatch:
        """What happens to routed events before the outbox (bridge/sweep.py)."""
        return Dispatch(self.config.routes,
                        {s.name: type(s).default_baseline for s in self.config.sinks},
                        self.config.silences)

    def _scope_lock(self, scope: str) -> asyncio.Lock:
        return self.scope_locks.setdefault(scope, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def _no_sweeps(self) -> AsyncIterator[None]:
        """Hold every scope's lock: no sweep is between its routing and its commit. Waits,
        holding none, while any scope is sweeping, so no sweep is kept waiting meanwhile."""
        locks = [self._scope_lock(scope) for scope in sorted(self.scopes)]
        while (busy := next((lock for lock in locks if lock.locked()), None)) is not None:
            async with busy:
                pass
        for lock in locks:  # all free: taken without yielding to the loop in between
            await lock.acquire()
        try:
            yield
        finally:
            for lock in locks:
                lock.release()

    async def settle_silences(self) -> int:
        """Deliver what ended silences held back (bridge/silences.py), while no sweep is in
        flight: one that routed while a silence was active must commit its muted rows first.
        Returns how many were settled; never raises (the next look tries again)."""
        try:
            async with self._no_sweeps():
                muting = await load_muting(self.store, self.config.silences)
                done = 0
                for silence in muting.silences:
                    now = utcnow()
                    if silence.state(now) == "ended" and await settle(
                            self.store, silence, self.dispatch.sinks, muting, now) is not None:
                        done += 1
        except StoreCorruptError as exc:
            log.critical("state_store_corrupt", error=str(exc))
            if self.on_fatal is not None:
                self.on_fatal(str(exc))
            return 0
        except Exception as exc:
            log.error("silence_settlement_failed", error=f"{type(exc).__name__}: {exc}")
            return 0
        if done:
            for worker in self.workers.values():
                worker.wake()
        return done

    def settle_soon(self) -> None:
        """Look for ended silences now (an operator just expired one), not at the next look."""
        job = self.scheduler.get_job(SETTLE_JOB) if self.scheduler is not None else None
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    @property
    def scopes(self) -> set[str]:
        return {scope for source in self.sources.values() for scope in source.scopes}

    def _sink_verdict(self, name: str, verdict: SinkVerdict) -> None:
        self.health.sink_verdict(name, verdict)
        if self.on_activity is not None:
            self.on_activity(False)

    async def sweep(self, source: Source[SourceConfig], scope: str) -> SweepResult | None:
        """One scheduled sweep; never raises, so the scheduler and the daemon live on."""
        if self.stopping:  # fired by the scheduler just before it was shut down
            return None
        task = asyncio.current_task()
        if task is not None:
            self.inflight[task] = scope
        # `sweep_run` ties together every line of one sweep (retries, notes, the outcome); the
        # stored sweep id is only known once it commits, and `sweep_done` carries it then.
        context = {"source": source.name, "scope": scope, "sweep_run": uuid.uuid4().hex[:12]}
        try:
            with structlog.contextvars.bound_contextvars(**context):
                return await self._sweep(source, scope)
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            return None  # abandoned by `stop` (and logged there): nothing for the scheduler
        finally:
            if task is not None:
                self.inflight.pop(task, None)
            if self.on_activity is not None:
                self.on_activity(True)

    async def _sweep(self, source: Source[SourceConfig], scope: str) -> SweepResult | None:
        if await self._paused():
            return None  # polled again at its next turn; nothing is lost meanwhile
        try:
            units = ownership_of(self.store)  # several replicas: sweep only what we own
            if units is not None and not await units.take(scope_unit(scope)):
                owner = units.owner_of(scope_unit(scope)) or "another replica"
                self.health.sweep_finished(scope, source=source.name, complete=False,
                                           skipped=True, error=None,
                                           notes=[f"swept by replica {owner}"])
                return None
            async with self._scope_lock(scope):
                result = await run_sweep(source, scope, self.store, self.dispatch,
                                         keep_events=self.keep_events,
                                         on_commit=self._wake_workers)
        except StoreCorruptError as exc:
            log.critical("state_store_corrupt", error=str(exc),
                         hint="stopping: retrying cannot help and writing could make it worse")
            self.health.store_opened(False, str(exc))
            if self.on_fatal is not None:
                self.on_fatal(str(exc))
            return None
        except StoreError as exc:  # unavailable (full, locked): failed, resolves nothing
            log.error("sweep_not_committed", error=str(exc))
            self.health.sweep_finished(scope, source=source.name, complete=False, skipped=False,
                                       error=f"state store: {exc}")
            return None
        except Exception as exc:  # a bug must not stop the schedule
            log.exception("sweep_crashed", error=f"{type(exc).__name__}: {exc}")
            self.health.sweep_finished(scope, source=source.name, complete=False, skipped=False,
                                       error=f"internal error: {type(exc).__name__}")
            return None
        r = result.record
        self.health.sweep_finished(scope, source=source.name, complete=r.outcome == "complete",
                                   skipped=r.outcome == "skipped", error=r.error, notes=r.notes)
        self.health.coverage(scope, source.name, source.coverage.of(scope))
        if r.events:
            self._wake_workers()
        return result

    def _wake_workers(self) -> None:
        """Events were committed: the sink workers deliver them now, while a large sweep goes
        on committing its next chunks, rather than after its last page."""
        for worker in self.workers.values():
            worker.wake()

    async def _paused(self) -> bool:
        """Back-pressure: True while sweeps must wait for delivery. A store that cannot say
        does not stop sweeps (the sweep itself will meet the store's trouble)."""
        if self.backpressure is None:
            return False
        try:
            reason = await self.backpressure.reason(self.store)
        except StoreError as exc:
            log.warning("backpressure_check_failed", error=str(exc))
            return False
        self.health.sweeps_paused(reason)
        return reason is not None

    def start(self) -> None:
        """Start sink workers and the sweep schedule (first sweeps run right away)."""
        for name in self.workers:
            self.health.expect_sink(name)
        for worker in self.workers.values():
            self.worker_tasks.append(asyncio.create_task(worker.run(self.stop_workers),
                                                         name=f"sink:{worker.name}"))
        scheduler = AsyncIOScheduler(timezone=UTC)
        now = datetime.now(UTC)
        for source in self.sources.values():
            for scope in source.scopes:
                self.health.expect_scope(scope, source.name, source.config.interval)
                scheduler.add_job(
                    self.sweep, "interval", args=(source, scope), id=f"sweep:{scope}",
                    seconds=source.config.interval, jitter=source.config.jitter or None,
                    max_instances=1, coalesce=True, next_run_time=now,
                    misfire_grace_time=max(1, int(source.config.interval)),
                )
        scheduler.add_job(self.settle_silences, "interval", id=SETTLE_JOB,
                          seconds=self.config.silences.check_interval, max_instances=1,
                          coalesce=True, next_run_time=now)
        scheduler.start()
        self.scheduler = scheduler

    async def stop(self, grace: float) -> None:
        """Stop scheduling; within one `grace` deadline let an in-flight sweep finish (or
        abandon it: a commit already handed to the store completes whole, the rest is replayed
        by the next run) and let each worker finish its batch (an abandoned one stays queued)."""
        deadline = asyncio.get_running_loop().time() + grace
        self.stopping = True
        if self.scheduler is not None:
            # Pause, not shut down, until the sweeps settle: APScheduler's asyncio executor
            # cancels running jobs on shutdown, which would abandon every sweep at once.
            self.scheduler.pause()
        self.stop_workers.set()  # workers finish the batch in hand, then return
        await _settle(dict(self.inflight), deadline, "sweep_abandoned", "scope")
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        await _settle({t: t.get_name().removeprefix("sink:") for t in self.worker_tasks},
                      deadline, "delivery_abandoned", "sink")
        for worker, task in zip(self.workers.values(), self.worker_tasks, strict=False):
            if task.cancelled():  # cut off mid-send: its worker never got to close the sink
                with contextlib.suppress(Exception):
                    await worker.sink.close()
        for source in self.sources.values():
            with contextlib.suppress(Exception):
                await source.close()
        await self.http.close()

    async def sweep_all_once(self) -> list[SweepResult | None]:
        results = []
        for source in self.sources.values():
            for scope in source.scopes:
                results.append(await self.sweep(source, scope))
        return results

    async def drain(self, timeout: float) -> dict[str, int]:
        """Deliver everything pending, for at most `timeout`; returns what is left per sink."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, stop.set)
        try:
            left = await asyncio.gather(*(w.drain(stop) for w in self.workers.values()))
        finally:
            timer.cancel()
        return dict(zip(self.workers, left, strict=True))


async def configured_scopes(config: BridgeConfig) -> dict[str, str]:
    """Every scope the config's sources sweep, with its source's name. Sources are built to
    ask them (a source decides its scopes, e.g. one per tenant) but never poll."""
    http = HttpContext()
    try:
        return {scope: sc.name for sc in config.sources for scope in sc.build(http).scopes}
    finally:
        await http.close()


async def _settle(tasks: Mapping[asyncio.Task[Any], str], deadline: float, what: str,
                  label: str) -> None:
    """Wait for `tasks` until `deadline`, then cancel (and log) the ones still running."""
    if not tasks:
        return
    timeout = max(0.0, deadline - asyncio.get_running_loop().time())
    _, pending = await asyncio.wait(list(tasks), timeout=timeout)
    for task in pending:
        log.warning(what, **{label: tasks[task]})
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
