"""The daemon's in-memory view of itself, as `/readyz` reports it.

Readiness answers "is this process doing its job", so only what the whole process depends on
can make it not ready: the state store is not open, no config was ever loaded, or every
expected source scope is stale. A single stale scope or an unhealthy sink is reported (in
`reasons` and the per-component detail, with status `degraded`) but keeps the process ready:
an orchestrator that restarts or unroutes the pod cannot fix a dead Jira or an expired vendor
key, and restarting would only stall every healthy sink and source with it.

A coverage check that is broken (bridge/sources/coverage.py: an account the vendor cannot
scan, scans that stopped, a missing licence or API scope) is degraded too: the process works,
but a vendor is not seeing part of the estate, which would otherwise look like "no findings".

A rejected config reload (SIGHUP with an invalid file) is degraded too, not unready: the
previous config keeps running. Error strings are redacted on the way in, because `/readyz`
output ends up in probe logs and dashboards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import structlog

from bridge import metrics
from bridge.secrets import redact
from bridge.sources.coverage import Check

log = structlog.get_logger(__name__)

MIN_STALE_AFTER = 300.0


@dataclass
class _Scope:
    source: str
    interval: float | None  # None: reported but never expected (no expect_scope call)
    registered_at: float
    last_sweep_at: float | None = None
    last_ok_at: float | None = None  # last complete-or-skipped sweep
    complete: bool | None = None
    skipped: bool | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    # Coverage checks by name, as last reported (bridge/sources/coverage.py).
    coverage: dict[str, Check] = field(default_factory=dict)

    @property
    def stale_after(self) -> float | None:
        return None if self.interval is None else max(3 * self.interval, MIN_STALE_AFTER)

    def stale(self, now: float) -> bool:
        if self.interval is None:
            return False
        if self.last_ok_at is None:  # never swept fully: ready during the startup grace
            return now - self.registered_at > 3 * self.interval
        assert self.stale_after is not None
        return now - self.last_ok_at > self.stale_after


# What a sink's destination is doing, as its worker last saw it. "throttled": the receiver
# said later (429, Retry-After); "unreachable": nothing answered (refused, DNS, TLS, disk);
# "failing": it answered with errors (5xx, timeouts) or the state store failed under it.
SinkState = Literal["ok", "throttled", "unreachable", "failing"]
SINK_STATES: tuple[SinkState, ...] = ("ok", "throttled", "unreachable", "failing")


@dataclass(frozen=True, slots=True)
class SinkVerdict:
    """A sink worker's latest word on its destination."""

    state: SinkState = "ok"
    error: str | None = None
    next_attempt_at: float | None = None  # wall clock of the next try, while in trouble

    @property
    def healthy(self) -> bool:
        return self.state == "ok"


@dataclass
class _Sink:
    verdict: SinkVerdict = field(default_factory=SinkVerdict)
    depth: int | None = None
    oldest_age: float | None = None


def _clean(text: str | None) -> str | None:
    return None if text is None else redact(text)


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else round(max(0.0, now - at), 3)


class Health:
    """Thread-safe record of store, config, per-scope sweeps and per-sink status."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._store_ok = False
        self._stopping = False
        self._store_error: str | None = "not opened yet"
        self._config_path: str | None = None
        self._config_loaded_at: float | None = None
        self._config_error: str | None = None
        self._scopes: dict[str, _Scope] = {}
        self._sinks: dict[str, _Sink] = {}
        self._paused: str | None = None  # why sweeps wait (bridge/backpressure.py)
        # Several replicas (bridge/store/units.py): who owns which unit, shown as `units`.
        self.units: Callable[[], dict[str, Any]] | None = None

    def stopping(self) -> None:
        """Shutdown began: stop taking traffic (a load balancer should look elsewhere)."""
        with self._lock:
            self._stopping = True

    def store_opened(self, ok: bool, error: str | None = None) -> None:
        """Call with ok=False when the store is closed (shutdown) or failed."""
        with self._lock:
            self._store_ok = ok
            self._store_error = None if ok else _clean(error) or "closed"

    def config_loaded(self, path: str, ok: bool = True, error: str | None = None) -> None:
        """Record a (re)load attempt; a failed reload keeps the previous config running."""
        with self._lock:
            self._config_path = path if ok or self._config_path is None else self._config_path
            if ok:
                self._config_loaded_at = self._clock()
                self._config_error = None
            else:
                self._config_error = f"{path}: {_clean(error) or 'invalid'}"

    def expect_scope(self, scope: str, source: str, interval: float) -> None:
        """Register a scope the scheduler will sweep every `interval` seconds."""
        with self._lock:
            existing = self._scopes.get(scope)
            if existing is None:
                self._scopes[scope] = _Scope(source, interval, self._clock())
            else:
                if existing.interval is None:  # swept before it was expected: grace from now
                    existing.registered_at = self._clock()
                existing.source, existing.interval = source, interval

    def forget_scope(self, scope: str) -> None:
        """A scope removed by a config reload no longer counts."""
        with self._lock:
            self._scopes.pop(scope, None)

    def sweep_finished(
        self,
        scope: str,
        *,
        source: str,
        complete: bool,
        skipped: bool,
        error: str | None,
        notes: Sequence[str] = (),
        at: float | None = None,
    ) -> None:
        """Record a sweep; `skipped` means the vendor had nothing new (still fresh)."""
        when = self._clock() if at is None else at
        with self._lock:
            entry = self._scopes.get(scope)
            if entry is None:
                entry = self._scopes[scope] = _Scope(source, None, when)
            entry.source = source
            entry.last_sweep_at = when
            entry.complete, entry.skipped = complete, skipped
            entry.error = _clean(error)
            entry.notes = [redact(n) for n in notes]
            if complete or skipped:
                entry.last_ok_at = when

    def coverage(self, scope: str, source: str, checks: Sequence[Check]) -> None:
        """A source's coverage checks for `scope` after a sweep: a broken one becomes a
        degraded reason; each sets the gauge; a change of verdict is logged once."""
        current = {c.name: replace(c, detail=redact(c.detail)) for c in checks}
        with self._lock:
            entry = self._scopes.get(scope)
            if entry is None:
                entry = self._scopes[scope] = _Scope(source, None, self._clock())
            before, entry.coverage = entry.coverage, current
        for name, check in current.items():
            metrics.SOURCE_COVERAGE.labels(source, scope, name).set(int(check.ok))
            old = before.get(name)
            if old is None and check.ok:
                continue  # a check that starts healthy is not news
            if old is None or old.ok != check.ok:
                (log.info if check.ok else log.warning)(
                    "source_coverage_restored" if check.ok else "source_coverage_broken",
                    source=source, scope=scope, check=name, detail=check.detail or None)
        for name in before.keys() - current.keys():
            metrics.SOURCE_COVERAGE.remove(source, scope, name)
            if not before[name].ok:
                log.info("source_coverage_restored", source=source, scope=scope, check=name,
                         detail="no longer watched")

    def sweeps_paused(self, reason: str | None) -> None:
        """Back-pressure: sweeps wait for delivery (`reason`), or no longer (None). Degraded,
        not unready: the process is doing its job, delivering; and scopes that go stale
        meanwhile do not make it unready either."""
        with self._lock:
            self._paused = reason

    def expect_sink(self, name: str) -> None:
        """A configured sink; one that survives a reload keeps its verdict and queue."""
        with self._lock:
            verdict = self._sinks.setdefault(name, _Sink()).verdict
        self._publish(name, verdict)

    def sink_verdict(self, name: str, verdict: SinkVerdict) -> None:
        """Called by the sink's worker after every batch: how the destination is doing."""
        verdict = replace(verdict, error=_clean(verdict.error))
        with self._lock:
            self._sinks.setdefault(name, _Sink()).verdict = verdict
        self._publish(name, verdict)

    def sink_queue(self, name: str, depth: int, oldest_age: float | None) -> None:
        """Called by the metrics refresher: what waits in the sink's outbox."""
        with self._lock:
            if name in self._sinks:
                entry = self._sinks[name]
                entry.depth, entry.oldest_age = depth, oldest_age

    def forget_sink(self, name: str) -> None:
        with self._lock:
            self._sinks.pop(name, None)
        for state in SINK_STATES:
            metrics.SINK_STATE.labels(name, state).set(0)

    def sink_names(self) -> list[str]:
        with self._lock:
            return list(self._sinks)

    @staticmethod
    def _publish(name: str, verdict: SinkVerdict) -> None:
        for state in SINK_STATES:
            metrics.SINK_STATE.labels(name, state).set(int(state == verdict.state))
        metrics.SINK_NEXT_ATTEMPT.labels(name).set(verdict.next_attempt_at or 0)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """(ready, JSON-able detail). See the module docstring for what flips readiness."""
        now = self._clock()
        with self._lock:
            blocking: list[str] = []
            warnings: list[str] = []
            if self._stopping:
                blocking.append("shutting down")
            if not self._store_ok:
                blocking.append(f"state store not open: {self._store_error}")
            if self._config_loaded_at is None:
                blocking.append(f"config not loaded: {self._config_error or 'not yet'}")
            elif self._config_error:
                warnings.append(f"config reload rejected, previous config still running: "
                                f"{self._config_error}")

            sources: dict[str, Any] = {}
            expected = stale = 0
            for scope, s in sorted(self._scopes.items()):
                is_stale = s.stale(now)
                if s.interval is not None:
                    expected += 1
                    stale += is_stale
                if is_stale:
                    last = _age(now, s.last_ok_at)
                    since = f"{last:.0f} s ago" if last is not None else "never"
                    why = f"source {s.source} scope {scope}: stale, last complete sweep {since}"
                    warnings.append(why + (f" (last error: {s.error})" if s.error else ""))
                broken = [c for c in s.coverage.values() if not c.ok]
                warnings += [f"source {s.source} scope {scope}: coverage: "
                             f"{c.detail or c.name}" for c in broken]
                sources[scope] = {
                    "source": s.source,
                    "interval": s.interval,
                    "stale_after": s.stale_after,
                    "stale": is_stale,
                    "last_sweep_age": _age(now, s.last_sweep_at),
                    "last_complete_age": _age(now, s.last_ok_at),
                    "complete": s.complete,
                    "skipped": s.skipped,
                    "error": s.error,
                    "notes": list(s.notes),
                    "coverage": {c.name: {"ok": c.ok, "detail": c.detail or None}
                                 for c in s.coverage.values()},
                }
            if self._paused is not None:
                warnings.append(f"sweeps paused: {self._paused}")
            elif expected and stale == expected:
                blocking.append(f"every source scope is stale ({stale} of {expected})")

            sinks: dict[str, Any] = {}
            for name, k in sorted(self._sinks.items()):
                v = k.verdict
                next_in = (None if v.next_attempt_at is None
                           else round(max(0.0, v.next_attempt_at - now), 3))
                if not v.healthy:
                    warnings.append(f"sink {name}: {v.state}" + (f": {v.error}" if v.error else "")
                                    + (f" (next attempt in {next_in:.0f} s)"
                                       if next_in is not None else ""))
                sinks[name] = {"healthy": v.healthy, "state": v.state, "error": v.error,
                               "next_attempt_in": next_in, "depth": k.depth,
                               "oldest_age": k.oldest_age}

            ok = not blocking
            detail: dict[str, Any] = {
                "status": "not_ready" if blocking else "degraded" if warnings else "ready",
                "ready": ok,
                "store": {"ok": self._store_ok, "error": None if self._store_ok
                          else self._store_error},
                "config": {"path": self._config_path,
                           "ok": self._config_loaded_at is not None and not self._config_error,
                           "loaded_age": _age(now, self._config_loaded_at),
                           "error": self._config_error},
                "sources": sources,
                "sinks": sinks,
                "reasons": blocking + warnings,
            }
            if self.units is not None:
                detail["units"] = self.units()
            return ok, detail
