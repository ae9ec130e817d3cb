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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bridge import metrics, systemd
from bridge.admin import AdminServer
from bridge.config import BridgeConfig, ConfigError, load_config
from bridge.health import Health
from bridge.http import HttpContext
from bridge.outbox import SinkWorker
from bridge.sources.base import Source, SourceConfig
from bridge.store.base import Store, StoreError
from bridge.store.sqlite import SQLiteStore
from bridge.sweep import SweepResult, run_sweep

log = structlog.get_logger(__name__)


def open_store(config: BridgeConfig) -> Store:
    return SQLiteStore(config.state.path)


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
    inflight: set[asyncio.Task[object]] = field(default_factory=set)
    # Keep each sweep's events in its result (tests, `bridge once`); the daemon keeps counts.
    keep_events: bool = False

    @classmethod
    def build(cls, config: BridgeConfig, store: Store, health: Health) -> Pipeline:
        p = cls(config, store, health)
        for sink_config in config.sinks:
            p.workers[sink_config.name] = SinkWorker(sink_config.build(), store, p._sink_status)
        for source_config in config.sources:
            p.sources[source_config.name] = source_config.build(p.http)
        return p

    def _sink_status(self, name: str, healthy: bool, error: str | None) -> None:
        self.health.sink_status(name, healthy=healthy, error=error)

    async def sweep(self, source: Source[SourceConfig], scope: str) -> SweepResult | None:
        """One scheduled sweep; never raises, so the scheduler and the daemon live on."""
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        try:
            with structlog.contextvars.bound_contextvars(source=source.name, scope=scope):
                result = await run_sweep(source, scope, self.store, self.config.routes,
                                         keep_events=self.keep_events)
            r = result.record
            self.health.sweep_finished(scope, source=source.name, complete=r.outcome == "complete",
                                       skipped=r.outcome == "skipped", error=r.error, notes=r.notes)
            if r.events:
                for worker in self.workers.values():
                    worker.wake()
            return result
        except StoreError as exc:
            log.error("sweep_not_committed", source=source.name, scope=scope, error=str(exc))
            self.health.sweep_finished(scope, source=source.name, complete=False, skipped=False,
                                       error=f"state store: {exc}")
        except Exception as exc:  # a bug must not stop the schedule
            log.exception("sweep_crashed", source=source.name, scope=scope,
                          error=f"{type(exc).__name__}: {exc}")
            self.health.sweep_finished(scope, source=source.name, complete=False, skipped=False,
                                       error=f"internal error: {type(exc).__name__}")
        finally:
            if task is not None:
                self.inflight.discard(task)
        return None

    def start(self) -> None:
        """Start sink workers and the sweep schedule (first sweeps run right away)."""
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
        """Stop scheduling; let an in-flight sweep commit or abandon it; let workers finish."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if self.inflight:
            _, pending = await asyncio.wait(list(self.inflight), timeout=grace)
            for task in pending:
                log.warning("sweep_abandoned", task=task.get_name())
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.stop_workers.set()
        if self.worker_tasks:
            _, pending_workers = await asyncio.wait(self.worker_tasks, timeout=grace)
            for task in pending_workers:
                log.warning("delivery_abandoned", task=task.get_name())
                task.cancel()
            await asyncio.gather(*self.worker_tasks, return_exceptions=True)
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


class Daemon:
    """Owns the store, the admin server, signals, and the current pipeline."""

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

    async def open(self) -> None:
        """Fail fast: an unusable state file stops startup with a clear message."""
        try:
            await self.store.open()
        except StoreError as exc:
            self.health.store_opened(False, str(exc))
            raise
        self.health.store_opened(True)
        self.health.config_loaded(str(self.config_path or "<embedded>"), True)

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    async def run(self, *, ready: asyncio.Event | None = None) -> int:
        """Run until SIGTERM/SIGINT (or `request_stop`); exit code 0 on a clean stop."""
        await self.open()
        admin = AdminServer(self.config.admin, self.health) if self.config.admin.enabled else None
        self.pipeline = Pipeline.build(self.config, self.store, self.health)
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        metrics_task = asyncio.create_task(self._refresh_metrics(), name="metrics")
        watchdog_stop = asyncio.Event()
        watchdog = asyncio.create_task(systemd.watchdog_loop(watchdog_stop), name="watchdog")
        try:
            if admin is not None:
                await admin.start()
                self.admin = admin
            self.pipeline.start()
            systemd.notify("READY=1", "STATUS=running")
            log.info("daemon_started", sources=list(self.pipeline.sources),
                     sinks=list(self.pipeline.workers),
                     admin=f"{self.config.admin.host}:{admin.port}" if admin else None)
            if ready is not None:
                ready.set()
            while not self._stop.is_set():
                await self._wait_signal()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    await self._reload_config()
        finally:
            systemd.notify("STOPPING=1")
            log.info("daemon_stopping", grace=self.grace)
            if self.pipeline is not None:
                await self.pipeline.stop(self.grace)
            metrics_task.cancel()
            watchdog_stop.set()
            await asyncio.gather(metrics_task, watchdog, return_exceptions=True)
            if admin is not None:
                await admin.stop()
            await self.store.close()
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

    async def _wait_signal(self) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        reload = asyncio.ensure_future(self._reload.wait())
        try:
            await asyncio.wait([stop, reload], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            reload.cancel()

    async def _reload_config(self) -> None:
        """SIGHUP: swap in the new config only if it validates and keeps the same state file."""
        if self.config_path is None:
            log.warning("reload_ignored", reason="no config file (embedded config)")
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload_rejected", path=str(self.config_path), problems=exc.problems)
            self.health.config_loaded(str(self.config_path), True,
                                      f"reload rejected, old config still running: {exc.problems[0]}")
            return
        if new.state != self.config.state:
            log.error("reload_rejected", path=str(self.config_path),
                      problems=["state: changing the state store needs a restart"])
            return
        try:
            candidate = Pipeline.build(new, self.store, self.health)
        except Exception as exc:
            log.error("reload_rejected", path=str(self.config_path), problems=[str(exc)])
            return
        assert self.pipeline is not None
        await self.pipeline.stop(self.grace)
        self.config, self.pipeline = new, candidate
        self.pipeline.start()
        self.health.config_loaded(str(self.config_path), True)
        log.info("config_reloaded", path=str(self.config_path),
                 sources=list(candidate.sources), sinks=list(candidate.workers))

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    async def _refresh_metrics(self, every: float = 10.0) -> None:
        """Outbox depth/age and item counts come from the store, refreshed periodically."""
        while True:
            with contextlib.suppress(StoreError):
                now = time.time()
                for q in await self.store.queue_stats():
                    metrics.OUTBOX_DEPTH.labels(q.sink).set(q.depth)
                    age = now - q.oldest_created_at.timestamp() if q.oldest_created_at else 0.0
                    metrics.OUTBOX_OLDEST_AGE.labels(q.sink).set(age)
                for scope, kind, state, count in await self.store.item_counts():
                    metrics.ITEMS.labels(self._source_of(scope), kind, state).set(count)
            await asyncio.sleep(every)

    def _source_of(self, scope: str) -> str:
        sources: Mapping[str, Source[SourceConfig]] = self.pipeline.sources if self.pipeline else {}
        for source in sources.values():
            if scope in source.scopes:
                return source.name
        return scope.split("/", 1)[0]
