"""The long-running process: schedule sweeps, run sink workers, serve the admin endpoints.

`Pipeline` is everything built from one config (sources, sinks, workers, the scheduler); a
SIGHUP builds a new one from the re-read file and swaps it in only if it validates. The store
outlives pipelines: it is opened once and fails fast when it cannot be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bridge import metrics, systemd
from bridge.admin import AdminServer
from bridge.config import AdminConfig, BridgeConfig, ConfigError, load_config
from bridge.health import Health
from bridge.http import HttpContext
from bridge.logging import configure_logging
from bridge.outbox import SinkWorker
from bridge.sources.base import Source, SourceConfig
from bridge.store.base import Store, StoreError
from bridge.store.sqlite import SQLiteStore
from bridge.sweep import SweepResult, run_sweep

log = structlog.get_logger(__name__)


def open_store(config: BridgeConfig) -> Store:
    return SQLiteStore(config.state.path)


@dataclass
class SinkState:
    """What `/readyz` shows for a sink: the worker's last verdict plus the refresher's queue."""

    healthy: bool = True
    error: str | None = None
    depth: int | None = None
    oldest_age: float | None = None


@dataclass
class Pipeline:
    """Sources, sink workers and their schedule, built from one config."""

    config: BridgeConfig
    store: Store
    health: Health
    http: HttpContext = field(default_factory=HttpContext)
    sources: dict[str, Source[SourceConfig]] = field(default_factory=dict)
    workers: dict[str, SinkWorker] = field(default_factory=dict)
    sinks: dict[str, SinkState] = field(default_factory=dict)
    scheduler: AsyncIOScheduler | None = None
    stop_workers: asyncio.Event = field(default_factory=asyncio.Event)
    worker_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    inflight: dict[asyncio.Task[Any], str] = field(default_factory=dict)  # sweep → scope
    stopping: bool = False
    # Keep each sweep's events in its result (tests, `bridge once`); the daemon keeps counts.
    keep_events: bool = False
    # Called after a sweep or a delivery, so the daemon refreshes the queue metrics promptly.
    on_activity: Callable[[bool], None] | None = None

    @classmethod
    def build(cls, config: BridgeConfig, store: Store, health: Health) -> Pipeline:
        p = cls(config, store, health)
        for sink_config in config.sinks:
            p.workers[sink_config.name] = SinkWorker(sink_config.build(), store, p._sink_status)
            p.sinks[sink_config.name] = SinkState()
        for source_config in config.sources:
            p.sources[source_config.name] = source_config.build(p.http)
        return p

    @property
    def scopes(self) -> set[str]:
        return {scope for source in self.sources.values() for scope in source.scopes}

    def _sink_status(self, name: str, healthy: bool, error: str | None) -> None:
        state = self.sinks.setdefault(name, SinkState())
        state.healthy, state.error = healthy, error
        self.publish_sink(name)
        if self.on_activity is not None:
            self.on_activity(False)

    def publish_sink(self, name: str) -> None:
        s = self.sinks[name]
        self.health.sink_status(name, healthy=s.healthy, error=s.error, depth=s.depth,
                                oldest_age=s.oldest_age)

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
        try:
            result = await run_sweep(source, scope, self.store, self.config.routes,
                                     keep_events=self.keep_events)
        except StoreError as exc:
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
        if r.events:
            for worker in self.workers.values():
                worker.wake()
        return result

    def start(self) -> None:
        """Start sink workers and the sweep schedule (first sweeps run right away)."""
        for name in self.sinks:
            self.publish_sink(name)
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


class Daemon:
    """Owns the store, the admin server, signals, and the current pipeline."""

    metrics_every = 10.0  # seconds between store-derived metric refreshes when idle
    metrics_min_gap = 1.0  # at most this often when sweeps and deliveries poke the refresher

    def __init__(self, config: BridgeConfig, *, config_path: Path | None = None,
                 grace: float = 20.0, health: Health | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.grace = grace
        self.health = health or Health()
        self.store: Store = open_store(config)
        self.pipeline: Pipeline | None = None
        self.admin: AdminServer | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._activity = asyncio.Event()
        self._items_changed = True
        self._item_labels: set[tuple[str, str, str]] = set()

    async def open(self) -> None:
        """Fail fast: an unusable state file stops startup with a clear message."""
        try:
            await self.store.open()
        except StoreError as exc:
            self.health.store_opened(False, str(exc))
            with contextlib.suppress(Exception):
                await self.store.close()
            raise
        self.health.store_opened(True)
        self.health.config_loaded(str(self.config_path or "<embedded>"), True)

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    async def run(self, *, ready: asyncio.Event | None = None) -> int:
        """Run until SIGTERM/SIGINT (or `request_stop`); exit code 0 on a clean stop.

        Raises `StoreError` or `ConfigError` (admin address unusable) before anything starts."""
        loop = asyncio.get_running_loop()
        self._install_signals(loop)  # early: a SIGHUP's default action would kill us
        try:
            await self.open()
            try:
                self.admin = await self._start_admin(self.config.admin)
            except ConfigError:
                await self.store.close()
                raise
        except BaseException:
            self._remove_signals(loop)
            raise
        metrics_task = asyncio.create_task(self._refresh_metrics(), name="metrics")
        watchdog_stop = asyncio.Event()
        watchdog = asyncio.create_task(systemd.watchdog_loop(watchdog_stop), name="watchdog")
        try:
            self.pipeline = self._build(self.config)
            self.pipeline.start()
            systemd.notify("READY=1", "STATUS=running")
            log.info("daemon_started", sources=list(self.pipeline.sources),
                     sinks=list(self.pipeline.workers), admin=self._admin_address())
            if ready is not None:
                ready.set()
            while not self._stop.is_set():
                await self._wait_signal()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    # systemd shows "reloading" until READY=1, whether the reload took or not.
                    systemd.notify("RELOADING=1", "STATUS=reloading",
                                   f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
                    try:
                        await self._reload_config()
                    finally:
                        systemd.notify("READY=1", "STATUS=running")
        finally:
            systemd.notify("STOPPING=1", "STATUS=stopping")
            self.health.stopping()
            log.info("daemon_stopping", grace=self.grace)
            if self.pipeline is not None:
                await self.pipeline.stop(self.grace)
            metrics_task.cancel()
            watchdog_stop.set()
            await asyncio.gather(metrics_task, watchdog, return_exceptions=True)
            if self.admin is not None:
                await self.admin.stop()
            await self.store.close()
            self.health.store_opened(False, "closed")
            self._remove_signals(loop)
            log.info("daemon_stopped")
        return 0

    async def once(self, deliver_timeout: float = 60.0) -> int:
        """Sweep every scope once, deliver, exit: 0 when all swept and delivered, 1 otherwise."""
        await self.open()
        pipeline = Pipeline.build(self.config, self.store, self.health)
        try:
            results = await pipeline.sweep_all_once()
            left = await pipeline.drain(deliver_timeout)
        finally:
            await pipeline.stop(self.grace)
            await self.store.close()
        failed = [r for r in results if r is None or r.record.outcome in ("failed",)]
        pending = {k: v for k, v in left.items() if v}
        if pending:
            log.error("undelivered", pending=pending)
        return 1 if failed or pending else 0

    def _build(self, config: BridgeConfig) -> Pipeline:
        pipeline = Pipeline.build(config, self.store, self.health)
        pipeline.on_activity = self._poke_metrics
        return pipeline

    async def _start_admin(self, config: AdminConfig) -> AdminServer | None:
        """A listening admin server, or None when disabled; a bad address is a config error."""
        if not config.enabled:
            return None
        admin = AdminServer(config, self.health)
        try:
            await admin.start()
        except OSError as exc:
            raise ConfigError(str(self.config_path or "<embedded>"), [
                f"admin: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
            ]) from None
        return admin

    def _admin_address(self) -> str | None:
        return f"{self.admin.config.host}:{self.admin.port}" if self.admin is not None else None

    async def _wait_signal(self) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        reload = asyncio.ensure_future(self._reload.wait())
        try:
            await asyncio.wait([stop, reload], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            reload.cancel()

    async def _reload_config(self) -> None:
        """SIGHUP: swap in the new config only if it validates and keeps the same state file;
        otherwise say why (naming the YAML path) and keep running the old one."""
        if self.config_path is None:
            log.warning("reload_ignored", reason="no config file (embedded config)")
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self._reject(exc.problems)
            return
        if new.state != self.config.state:
            self._reject(["state: changing the state store needs a restart"])
            return
        try:
            candidate = self._build(new)
        except Exception as exc:
            self._reject([f"{type(exc).__name__}: {exc}"])
            return
        if new.admin != self.config.admin and not await self._swap_admin(new.admin):
            await candidate.stop(0)  # never started: just release its HTTP sessions
            return
        if new.log != self.config.log:
            configure_logging(new.log)
        assert self.pipeline is not None
        old = self.pipeline
        await old.stop(self.grace)
        for name in candidate.sinks.keys() & old.sinks.keys():
            candidate.sinks[name] = old.sinks[name]  # a failing sink stays reported as such
        self.config, self.pipeline = new, candidate
        for scope in old.scopes - candidate.scopes:
            self.health.forget_scope(scope)
        for sink in set(old.sinks) - set(candidate.sinks):
            self.health.forget_sink(sink)
        candidate.start()
        self.health.config_loaded(str(self.config_path), True)
        self._poke_metrics(True)
        log.info("config_reloaded", path=str(self.config_path),
                 sources=list(candidate.sources), sinks=list(candidate.workers),
                 admin=self._admin_address())

    def _reject(self, problems: list[str]) -> None:
        log.error("reload_rejected", path=str(self.config_path), problems=problems,
                  hint="the previous configuration keeps running")
        self.health.config_loaded(str(self.config_path), False, "; ".join(problems))

    async def _swap_admin(self, config: AdminConfig) -> bool:
        """Restart the admin server with new settings. A new address is bound before the old
        server stops, so a failure leaves the old one untouched; only the same fixed address
        (say, a new token) needs the old server gone first, and gets it back on failure."""
        old = self.admin
        same_address = (old is not None and config.port != 0
                        and (config.host, config.port) == (old.config.host, old.port))
        if same_address:
            assert old is not None
            await old.stop()
        try:
            self.admin = await self._start_admin(config)
        except ConfigError as exc:
            if same_address:
                assert old is not None
                with contextlib.suppress(OSError):
                    await old.start()
            self.admin = old
            self._reject(exc.problems)
            return False
        if old is not None and not same_address:
            await old.stop()
        return True

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    def _poke_metrics(self, items_changed: bool) -> None:
        self._items_changed |= items_changed
        self._activity.set()

    async def _refresh_metrics(self) -> None:
        """Outbox depth/age and item counts come from the store: refreshed soon after a sweep
        or a delivery (at most every `metrics_min_gap`), and every `metrics_every` anyway."""
        while True:
            self._activity.clear()
            try:
                await self._refresh_queues()
                if self._items_changed:
                    self._items_changed = False
                    await self._refresh_items()
            except Exception as exc:  # a locked or closing store must not end the refresher
                log.warning("metrics_refresh_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.metrics_min_gap)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._activity.wait(), self.metrics_every)
            self._items_changed |= not self._activity.is_set()  # idle tick: recount anyway

    async def _refresh_queues(self) -> None:
        stats = {q.sink: q for q in await self.store.queue_stats()}
        pipeline = self.pipeline
        now = time.time()
        for sink in set(stats) | set(pipeline.sinks if pipeline else ()):
            q = stats.get(sink)
            depth = q.depth if q is not None else 0  # an emptied queue has no row at all
            oldest = q.oldest_created_at if q is not None else None
            age = max(0.0, now - oldest.timestamp()) if oldest is not None else 0.0
            metrics.OUTBOX_DEPTH.labels(sink).set(depth)
            metrics.OUTBOX_OLDEST_AGE.labels(sink).set(age)
            if pipeline is not None and sink in pipeline.sinks:
                state = pipeline.sinks[sink]
                state.depth, state.oldest_age = depth, round(age, 3)
                pipeline.publish_sink(sink)

    async def _refresh_items(self) -> None:
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

    def _scope_owners(self) -> dict[str, str]:
        sources: Iterable[Source[SourceConfig]] = (
            self.pipeline.sources.values() if self.pipeline else ())
        return {scope: source.name for source in sources for scope in source.scopes}
