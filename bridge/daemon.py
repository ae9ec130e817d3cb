"""The long-running process: signals, reloads, the admin server, and the store-derived metrics
refresher (`bridge.store_metrics`).

The work itself is a `Pipeline` (bridge/pipeline.py); a SIGHUP builds a new one from the
re-read file and swaps it in only if it validates. The store outlives pipelines: it is opened
once and fails fast when it cannot be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog

from bridge import startup_signals, systemd
from bridge.admin import AdminConfig, AdminServer
from bridge.admin_guard import LoopErrorLog, raise_open_files_limit
from bridge.config import BridgeConfig, ConfigError, load_config, plaintext_urls
from bridge.health import Health
from bridge.logging import configure_logging
from bridge.pipeline import Pipeline
from bridge.silences import SilenceService
from bridge.sources.base import Source, SourceConfig
from bridge.store.base import Store, StoreError
from bridge.store.units import coordinate, ownership_of, running_replicas
from bridge.store_metrics import StoreMetrics
from bridge.sweep import SweepResult

log = structlog.get_logger(__name__)


# `bridge once` exit codes (README, `bridge once --help`): cron and CI tell a partial sweep
# from a broken one. A failure wins over an incomplete sweep when both happened.
EXIT_OK = 0  # every scope swept completely (or had nothing new) and everything delivered
EXIT_FAILED = 1  # a sweep failed, or events were left undelivered or dead-lettered
EXIT_INCOMPLETE = 3  # all delivered, but a sweep was incomplete: partial coverage


def once_exit_code(results: Iterable[SweepResult | None], *, undelivered: bool) -> int:
    """What one run of every scope amounts to (None: a sweep that could not even commit)."""
    outcomes = [r.record.outcome if r is not None else "failed" for r in results]
    if undelivered or "failed" in outcomes:
        return EXIT_FAILED
    return EXIT_INCOMPLETE if "incomplete" in outcomes else EXIT_OK


def open_store(config: BridgeConfig) -> Store:
    """The store the `state:` section names (not yet opened)."""
    return config.state.build()


def warn_plaintext_urls(config: BridgeConfig) -> None:
    """Said at startup and on reload: `bridge check-config` says it too."""
    for component, path, host in plaintext_urls(config):
        log.warning("plaintext_http", component=component, setting=path, host=host,
                    hint="credentials and findings cross the network unencrypted; use https://")


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
        self._exit_code = 0
        self._previous_handlers: dict[signal.Signals, Any] = {}
        self.store_metrics = StoreMetrics(self.store, self.health, self._scope_owners)

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

    def _fatal(self, why: str) -> None:
        """The state cannot be trusted any more: stop, and say so with the exit code."""
        self._exit_code = 1
        self.request_stop()

    def _settle_soon(self) -> None:
        if self.pipeline is not None:
            self.pipeline.settle_soon()

    def request_reload(self) -> None:
        self._reload.set()

    async def run(self, *, ready: asyncio.Event | None = None) -> int:
        """Run until SIGTERM/SIGINT (or `request_stop`); exit code 0 on a clean stop, 1 when
        the state store turned out corrupt while running.

        Raises `StoreError` or `ConfigError` (admin address unusable) before anything starts."""
        loop = asyncio.get_running_loop()
        self._install_signals(loop)  # early: a SIGHUP's default action would kill us
        if self._stop.is_set():  # a SIGTERM while the command started: nothing opened yet
            self._remove_signals(loop)
            log.info("stop_requested_during_startup")
            log.info("daemon_stopped", exit_code=self._exit_code)
            return self._exit_code
        # Room for connections, and no traceback storm if they run out anyway (admin_guard).
        open_files, _ = raise_open_files_limit()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(LoopErrorLog())
        warn_plaintext_urls(self.config)
        try:
            await self.open()
            try:
                await coordinate(self.store)  # several replicas share the work (PostgreSQL)
                if (units := ownership_of(self.store)) is not None:
                    self.health.units = units.describe
                self.admin = await self._start_admin(self.config.admin)
            except (ConfigError, StoreError):
                await self.store.close()
                raise
        except BaseException:
            self._remove_signals(loop)
            loop.set_exception_handler(previous_handler)
            raise
        metrics_task = asyncio.create_task(self.store_metrics.run(), name="metrics")
        watchdog_stop = asyncio.Event()
        watchdog = asyncio.create_task(systemd.watchdog_loop(watchdog_stop), name="watchdog")
        try:
            if self._stop.is_set():  # a SIGTERM while opening the store: no sweep starts
                log.info("stop_requested_during_startup")
            else:
                self.pipeline = self._build(self.config)
                self.pipeline.start()
                systemd.notify("READY=1", "STATUS=running")
                log.info("daemon_started", sources=list(self.pipeline.sources),
                         sinks=list(self.pipeline.workers), admin=self._admin_address(),
                         open_files_limit=open_files)
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
            loop.set_exception_handler(previous_handler)
            log.info("daemon_stopped", exit_code=self._exit_code)
        return self._exit_code

    async def once(self, deliver_timeout: float = 60.0) -> int:
        """Sweep every scope once, deliver, exit with `once_exit_code`; refused (nothing done)
        while `bridge run` replicas share the state database."""
        await self.open()
        if await self._beside_replicas():
            return EXIT_FAILED
        pipeline = Pipeline.build(self.config, self.store, self.health)
        try:
            # Silences that ended since the last run are settled before the sweeps (which then
            # find their items delivered) and after (one may have ended meanwhile).
            await pipeline.settle_silences()
            results = await pipeline.sweep_all_once()
            await pipeline.settle_silences()
            left = await pipeline.drain(deliver_timeout)
        finally:
            await pipeline.stop(self.grace)
            await self.store.close()
        pending = {k: v for k, v in left.items() if v}
        if pending:
            log.error("undelivered", pending=pending)
        dead = {w.name: w.dead for w in pipeline.workers.values() if w.dead}
        if dead:
            log.error("dead_lettered_during_run", dead=dead, hint="bridge dlq list")
        return once_exit_code(results, undelivered=bool(pending or dead))

    async def _beside_replicas(self) -> bool:
        """Whether `bridge run` replicas share the state database, said as an error; the store
        is closed when they do (or when it cannot tell)."""
        try:
            replicas = await running_replicas(self.store)
        except BaseException:
            await self.store.close()
            raise
        if replicas:
            await self.store.close()
            log.error("once_refused", replicas=replicas,
                      reason="bridge run replicas share this state database and a one-off run "
                      "takes no leases: it would sweep and deliver their scopes and sinks a "
                      "second time",
                      hint="stop them first (one killed less than a lease ago counts until "
                      "then); bridge state leases shows them")
        return bool(replicas)

    def _build(self, config: BridgeConfig) -> Pipeline:
        # The rate-limit buckets of the running pipeline live on in the new one (for the
        # vendor scopes it still has): a reload must not forget what was just spent.
        inherited = self.pipeline.http.buckets if self.pipeline is not None else None
        pipeline = Pipeline.build(config, self.store, self.health, buckets=inherited)
        pipeline.on_activity = self.store_metrics.poke
        pipeline.on_fatal = self._fatal
        return pipeline

    async def _start_admin(self, config: AdminConfig) -> AdminServer | None:
        """A listening admin server, or None when disabled; a bad address is a config error."""
        if not config.enabled:
            return None
        admin = AdminServer(config, self.health,
                            silences=SilenceService(self.store, self._settle_soon))
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
            # Off the event loop: a large or hostile file must not stall /healthz, sweeps and
            # deliveries while it is parsed (loading only reads files and builds models).
            new = await asyncio.to_thread(load_config, self.config_path)
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
        warn_plaintext_urls(new)
        assert self.pipeline is not None
        old = self.pipeline
        self._say_what_the_reload_waits_for(old)
        await old.stop(self.grace)
        self.config, self.pipeline = new, candidate
        for scope in old.scopes - candidate.scopes:
            self.health.forget_scope(scope)
        for sink in set(old.workers) - set(candidate.workers):
            self.health.forget_sink(sink)
        candidate.start()
        self.health.config_loaded(str(self.config_path), True)
        self.store_metrics.poke(True)
        log.info("config_reloaded", path=str(self.config_path),
                 sources=list(candidate.sources), sinks=list(candidate.workers),
                 admin=self._admin_address())

    def _say_what_the_reload_waits_for(self, old: Pipeline) -> None:
        """The old pipeline's sweeps finish first (up to the grace): one held back by a vendor's
        rate limit can take many seconds, and a reload must not answer that late in silence."""
        sweeping = sorted(set(old.inflight.values()))
        if not sweeping:
            return
        throttled = old.http.throttled()
        log.info("reload_waiting_for_sweeps", scopes=sweeping, up_to_seconds=self.grace,
                 rate_limited={scope: round(wait, 1) for scope, wait in throttled.items()},
                 hint="the new configuration starts once these sweeps finish or the grace ends")
        reason = "rate-limited sweeps" if throttled else "sweeps"
        systemd.notify(f"STATUS=reloading: waiting up to {self.grace:g}s for {reason} of "
                       f"{', '.join(sweeping)}")

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
        """Our handlers, then whatever arrived before them (`bridge.startup_signals`): a SIGHUP
        becomes a reload once running, a SIGTERM or SIGINT a stop."""
        actions = {signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop,
                   signal.SIGHUP: self.request_reload}
        for sig, action in actions.items():
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, action)
            except (NotImplementedError, RuntimeError):  # not the main thread: nothing to undo
                continue
            self._previous_handlers[sig] = previous
        for sig in startup_signals.take():
            log.info("signal_during_startup", signal=sig.name,
                     action="stop" if sig in startup_signals.STOPPING else "reload once running")
            actions[sig]()

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """Back to the handlers from before `run` (held ones, in the `bridge` command): a
        SIGHUP during the last steps of shutdown is not fatal either."""
        for sig, previous in self._previous_handlers.items():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
            if previous is not None:
                signal.signal(sig, previous)
        self._previous_handlers.clear()

    def _scope_owners(self) -> dict[str, str]:
        sources: Iterable[Source[SourceConfig]] = (
            self.pipeline.sources.values() if self.pipeline else ())
        return {scope: source.name for source in sources for scope in source.scopes}
