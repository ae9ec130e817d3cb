"""What makes the daemon ready, degraded or not ready."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from bridge.health import SINK_STATES, Health, SinkState, SinkVerdict
from bridge.secrets import REDACTED, remember


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def started(clock: Clock) -> Health:
    health = Health(clock=clock)
    health.store_opened(True)
    health.config_loaded("/etc/bridge/bridge.yaml")
    return health


def test_not_ready_until_store_and_config() -> None:
    health = Health(clock=Clock())
    ok, detail = health.ready()
    assert not ok and detail["status"] == "not_ready"
    assert any("state store" in r for r in detail["reasons"])
    assert any("config not loaded" in r for r in detail["reasons"])
    health.store_opened(True)
    health.config_loaded("/etc/bridge/bridge.yaml", ok=False, error="sources[0].type: unknown")
    ok, detail = health.ready()
    assert not ok and "sources[0].type: unknown" in " ".join(detail["reasons"])
    health.config_loaded("/etc/bridge/bridge.yaml")
    ok, detail = health.ready()
    assert ok and detail["status"] == "ready" and detail["reasons"] == []
    json.dumps(detail)  # JSON-able as is


def test_store_closed_on_shutdown_is_not_ready() -> None:
    health = started(Clock())
    health.store_opened(False, error="closed for shutdown")
    ok, detail = health.ready()
    assert not ok and detail["store"] == {"ok": False, "error": "closed for shutdown"}


def test_rejected_reload_keeps_ready_but_degraded() -> None:
    health = started(Clock())
    health.config_loaded("/etc/bridge/new.yaml", ok=False, error="line 3: YAML syntax")
    ok, detail = health.ready()
    assert ok and detail["status"] == "degraded"
    assert detail["config"]["path"] == "/etc/bridge/bridge.yaml"
    assert "previous config still running" in detail["reasons"][0]
    health.config_loaded("/etc/bridge/bridge.yaml")
    assert health.ready()[1]["status"] == "ready"


def test_startup_grace_then_stale() -> None:
    clock = Clock()
    health = started(clock)
    health.expect_scope("so-prod", "so-prod", interval=60)
    assert health.ready()[0]  # not swept yet, within 3 * interval
    clock.now += 181
    ok, detail = health.ready()
    assert not ok and detail["sources"]["so-prod"]["stale"]
    assert "every source scope is stale (1 of 1)" in detail["reasons"]


def test_stale_after_is_at_least_five_minutes() -> None:
    clock = Clock()
    health = started(clock)
    health.expect_scope("fast", "fast", interval=10)
    health.sweep_finished("fast", source="fast", complete=True, skipped=False, error=None)
    clock.now += 299
    assert health.ready()[0]
    clock.now += 2
    assert not health.ready()[0]


def test_incomplete_sweeps_do_not_refresh_skipped_ones_do() -> None:
    clock = Clock()
    health = started(clock)
    health.expect_scope("a", "aether", interval=300)
    health.sweep_finished("a", source="aether", complete=True, skipped=False, error=None)
    clock.now += 600
    health.sweep_finished("a", source="aether", complete=False, skipped=False,
                          error="HTTP 500", notes=["page 3 failed"])
    clock.now += 301
    ok, detail = health.ready()
    scope = detail["sources"]["a"]
    assert not ok and scope["stale"] and scope["error"] == "HTTP 500"
    assert scope["notes"] == ["page 3 failed"] and scope["last_complete_age"] == 901
    assert scope["last_sweep_age"] == 301 and scope["complete"] is False
    health.sweep_finished("a", source="aether", complete=False, skipped=True, error=None)
    assert health.ready()[0]


def test_one_stale_scope_of_two_is_degraded_not_unready() -> None:
    clock = Clock()
    health = started(clock)
    for scope in ("a", "b"):
        health.expect_scope(scope, "src", interval=100)
    health.sweep_finished("a", source="src", complete=True, skipped=False, error=None)
    clock.now += 301
    health.sweep_finished("b", source="src", complete=True, skipped=False, error=None)
    ok, detail = health.ready()
    assert ok and detail["status"] == "degraded"
    assert detail["sources"]["a"]["stale"] and not detail["sources"]["b"]["stale"]
    assert any("scope a: stale" in r for r in detail["reasons"])
    health.forget_scope("a")
    assert health.ready()[1]["status"] == "ready"


def test_unexpected_scope_is_reported_never_stale() -> None:
    clock = Clock()
    health = started(clock)
    health.sweep_finished("adhoc", source="x", complete=False, skipped=False, error="boom")
    clock.now += 10_000
    ok, detail = health.ready()
    assert ok and detail["sources"]["adhoc"]["stale"] is False


def test_unhealthy_sink_degrades_without_flipping_readiness() -> None:
    clock = Clock()
    health = started(clock)
    for name in ("syslog", "jira"):
        health.expect_sink(name)
    health.sink_queue("syslog", 0, None)
    health.sink_verdict("jira", SinkVerdict("failing", "HTTP 503", clock.now + 30))
    health.sink_queue("jira", 42, 900.0)
    ok, detail = health.ready()
    assert ok and detail["status"] == "degraded"
    assert detail["sinks"]["jira"] == {"healthy": False, "state": "failing", "error": "HTTP 503",
                                       "next_attempt_in": 30.0, "depth": 42, "oldest_age": 900.0}
    assert detail["sinks"]["syslog"]["state"] == "ok"
    assert detail["reasons"] == ["sink jira: failing: HTTP 503 (next attempt in 30 s)"]
    health.forget_sink("jira")
    assert health.ready()[1]["status"] == "ready"


def test_errors_are_redacted() -> None:
    secret = remember("health-secret-value-123")
    health = started(Clock())
    health.sink_verdict("hook", SinkVerdict("failing", f"401 for token {secret}"))
    health.sweep_finished("s", source="s", complete=False, skipped=False,
                          error=f"key {secret}", notes=[f"note {secret}"])
    text = json.dumps(health.ready()[1])
    assert secret not in text and REDACTED in text


def test_shutdown_makes_it_not_ready() -> None:
    health = Health()
    health.store_opened(True)
    health.config_loaded("bridge.yaml")
    assert health.ready()[0]
    health.stopping()
    ready, detail = health.ready()
    assert not ready and "shutting down" in detail["reasons"]


@pytest.mark.parametrize("state", ["throttled", "unreachable", "failing"])
def test_each_kind_of_sink_trouble_is_told_apart_in_readyz_and_metrics(state: SinkState) -> None:
    clock = Clock()
    health = started(clock)
    health.expect_sink("soar")
    health.sink_verdict("soar", SinkVerdict(state, "why", clock.now + 15))
    ok, detail = health.ready()
    assert ok and detail["sinks"]["soar"]["state"] == state
    assert detail["sinks"]["soar"]["next_attempt_in"] == 15.0
    assert detail["reasons"] == [f"sink soar: {state}: why (next attempt in 15 s)"]
    for kind in SINK_STATES:
        gauge = REGISTRY.get_sample_value("bridge_sink_state", {"sink": "soar", "state": kind})
        assert gauge == (1.0 if kind == state else 0.0)
    assert REGISTRY.get_sample_value("bridge_sink_next_attempt_timestamp_seconds",
                                     {"sink": "soar"}) == clock.now + 15
    health.sink_verdict("soar", SinkVerdict())
    assert REGISTRY.get_sample_value("bridge_sink_state", {"sink": "soar", "state": "ok"}) == 1
