"""No silent blind spots: what each vendor is not seeing becomes a `/readyz` reason (degraded,
still ready), the `bridge_source_coverage` gauge, one log line per change, and, when asked for,
a `source_health` item (`new` when coverage breaks, `resolved` when it returns).

Against the simulators over real HTTP, a real SQLite store, and the pipeline's own health.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from bridge.config import parse_config
from bridge.sim.aether365 import Aether365World
from bridge.sim.ayliea import AylieaWorld
from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld
from bridge.sweep import SweepResult
from tests.conftest import aether365_source, ayliea_source, base_config, scanorbit_source
from tests.support.harness import Harness

T = "tenant-contoso"
A365 = "aether365/contoso"


def running(h: Harness) -> Harness:
    """The health of a daemon that opened its store and loaded its config (the harness does
    neither), so that readiness is about the sources alone."""
    h.health.store_opened(True)
    h.health.config_loaded("bridge.yaml")
    return h


def gauge(source: str, scope: str, check: str) -> float | None:
    return REGISTRY.get_sample_value("bridge_source_coverage",
                                     {"source": source, "scope": scope, "check": check})


def health_events(result: SweepResult) -> list[tuple[str, str]]:
    return sorted((e.type.value, e.key) for e in result.events if e.kind == "source_health")


def coverage_logs(logs: list[MutableMapping[str, Any]]) -> list[tuple[str, str]]:
    return [(e["event"], e["check"]) for e in logs
            if e["event"].startswith("source_coverage_")]


# -- ScanOrbit accounts ---------------------------------------------------------------------

async def test_scanorbit_account_in_error_is_a_blind_spot_until_it_recovers(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim]) -> None:
    world, sim = scanorbit
    world.add_finding()
    prod, _ = world.accounts
    number = prod["awsAccountId"]
    check = f"account:{number}"
    cfg = parse_config(base_config(tmp_path, [scanorbit_source(sim.url, coverage_events=True,
                                                               full_resweep_interval=0)]))
    async with Harness(cfg) as h:
        running(h)
        first = await h.sweep()
        assert first.record.outcome == "complete"
        assert health_events(first) == []  # healthy checks are not news
        assert gauge("scanorbit", "scanorbit", check) == 1
        ready, detail = h.health.ready()
        assert ready and detail["status"] == "ready"

        world.set_account(prod["id"], status="error",
                          lastError="AccessDenied: role bridge-scan cannot be assumed")
        with capture_logs() as logs:
            broken = await h.sweep()
            again = await h.sweep()
        assert health_events(broken) == [("new", check)]
        (event,) = [e for e in broken.events if e.kind == "source_health"]
        assert event.title == f"ScanOrbit coverage: account {number}"
        assert "AccessDenied" in str(event.attributes["detail"])
        assert health_events(again) == []  # still broken: no event, no second log line
        assert coverage_logs(logs) == [("source_coverage_broken", check)]
        assert gauge("scanorbit", "scanorbit", check) == 0
        ready, detail = h.health.ready()
        assert ready and detail["status"] == "degraded"
        (reason,) = [r for r in detail["reasons"] if "coverage" in r]
        assert number in reason and "AccessDenied" in reason
        assert detail["sources"]["scanorbit"]["coverage"][check]["ok"] is False

        world.set_account(prod["id"], status="ok", lastError=None)
        with capture_logs() as logs:
            healed = await h.sweep()
        assert health_events(healed) == [("resolved", check)]
        assert coverage_logs(logs) == [("source_coverage_restored", check)]
        assert gauge("scanorbit", "scanorbit", check) == 1
        assert h.health.ready()[1]["status"] == "ready"


async def test_findings_carry_the_aws_account_number_and_name_from_one_accounts_request(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim]) -> None:
    world, sim = scanorbit
    world.delete_account(world.accounts[1]["id"])
    for _ in range(6):
        world.add_finding()
    orphan = world.add_finding(awsAccountId=None)  # its account was deleted
    cfg = parse_config(base_config(tmp_path, [scanorbit_source(sim.url, page_size=2)]))
    async with Harness(cfg) as h:
        running(h)
        world.stats.reset()
        result = await h.sweep()
    assert result.record.outcome == "complete"
    assert world.stats.requests_by_path["/api/v1/accounts"] == 1  # once a sweep, not a page
    live = world.accounts[0]
    for event in result.events:
        if event.key == orphan["id"]:
            assert "aws_account_number" not in event.attributes
            assert "account_name" not in event.attributes
        else:
            assert event.attributes["aws_account_number"] == live["awsAccountId"]
            assert event.attributes["account_name"] == live["name"]
            assert len(str(event.attributes["aws_account_number"])) == 12


async def test_the_enrichment_budget_is_per_sweep_not_per_page(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim]) -> None:
    world, sim = scanorbit
    for _ in range(7):
        world.add_finding()
    cfg = parse_config(base_config(tmp_path, [scanorbit_source(sim.url, page_size=2,
                                                               enrich_new=3, prefetch=0)]))
    async with Harness(cfg) as h:
        running(h)
        result = await h.sweep()
    enriched = [e for e in result.events if "resource_name" in e.attributes]
    assert len(result.events) == 7 and len(enriched) == 3
    assert result.record.requests == 1 + 1 + 4 + 3  # probe, accounts, 4 pages, 3 findings


# -- Aether365 --------------------------------------------------------------------------------

async def test_aether365_threat_source_without_consent_is_a_coverage_reason(
        tmp_path: Path, aether365: tuple[Aether365World, RunningSim]) -> None:
    world, sim = aether365
    world.add_risky_user(T)
    world.run_scan(T)
    cfg = parse_config(base_config(tmp_path, [aether365_source(
        sim.url, coverage_events=True, policies=False, compliance=False)]))
    async with Harness(cfg) as h:
        running(h)
        await h.sweep()
        world.set_source(T, "riskDetections", "needsConsent")
        broken = await h.sweep()
        assert broken.record.outcome == "complete"  # a configuration fact, not an outage
        assert health_events(broken) == [("new", "threat_source:riskDetections")]
        _, detail = h.health.ready()
        assert detail["status"] == "degraded"
        assert any("riskDetections of tenant contoso is needsConsent" in r
                   for r in detail["reasons"]), detail["reasons"]
        assert gauge("aether365", A365, "threat_source:riskDetections") == 0
        world.set_source(T, "riskDetections", "ok")
        assert health_events(await h.sweep()) == [("resolved", "threat_source:riskDetections")]


async def test_aether365_failed_and_stale_scans_are_coverage_reasons(
        tmp_path: Path, aether365: tuple[Aether365World, RunningSim]) -> None:
    world, sim = aether365
    world.populate(T, tests=4, failing=1)
    scan = world.run_scan(T)
    cfg = parse_config(base_config(tmp_path, [aether365_source(
        sim.url, coverage_events=True, policies=False, threats=False, scores=False,
        max_scan_age=86400)]))
    async with Harness(cfg) as h:
        running(h)
        await h.sweep()
        assert gauge("aether365", A365, "scan_age:compliance") == 1
        world.fail_scan(T)
        failed = await h.sweep()
        assert health_events(failed) == [("new", "scan_failed:compliance")]
        scan["completed_at"] = "2020-01-01T00:00:00Z"  # the last good scan, years ago
        world.touch()
        stale = await h.sweep()
        assert health_events(stale) == [("new", "scan_age:compliance")]
        reasons = h.health.ready()[1]["reasons"]
        assert any("failed" in r for r in reasons)
        assert any("days old" in r and "max_scan_age 1 days" in r for r in reasons)
        world.run_scan(T)
        assert health_events(await h.sweep()) == [("resolved", "scan_age:compliance"),
                                                  ("resolved", "scan_failed:compliance")]


async def test_plan_quota_429_backs_off_until_its_reset_and_is_not_a_rate_limit(
        tmp_path: Path, aether365: tuple[Aether365World, RunningSim]) -> None:
    world, sim = aether365
    world.populate(T, tests=4, failing=2)
    world.run_scan(T)
    world.exhaust_quota(T, reset_in=3600)
    cfg = parse_config(base_config(tmp_path, [aether365_source(sim.url, coverage_events=True)]))
    async with Harness(cfg) as h:
        running(h)
        with capture_logs() as logs:
            first = await h.sweep()
            second = await h.sweep()
        # One request: not retried, and the other parts not tried either.
        assert first.record.requests == 1 and first.record.outcome == "incomplete"
        assert any("plan limit reached" in n for n in first.record.notes)
        assert [e for e in logs if e["event"] == "aether365_plan_limit"]
        # Until the reset nothing is asked at all; the sweep says why.
        assert second.record.requests == 0 and second.record.outcome == "incomplete"
        assert health_events(first) == [("new", "plan_quota")]
        assert gauge("aether365", A365, "plan_quota") == 0
        assert any("Plan limit reached" in r for r in h.health.ready()[1]["reasons"])
    assert world.stats.rate_limited == 0  # the rate limiter was never involved
    world.restore_quota(T)
    async with Harness(cfg) as h:  # a restart forgets the wait: one request finds it lifted
        healed = await h.sweep()
    assert healed.record.outcome == "complete"
    assert health_events(healed) == [("resolved", "plan_quota")]
    assert gauge("aether365", A365, "plan_quota") == 1


# -- Ayliea -----------------------------------------------------------------------------------

async def test_ayliea_plan_refusal_and_missing_scope_say_which(
        tmp_path: Path, ayliea: tuple[AylieaWorld, RunningSim]) -> None:
    world, sim = ayliea
    world.add_recommendation()
    world.set_score("ai-security", 80)
    key = next(iter(world.keys))
    world.keys[key] = {"scores:read"}
    cfg = parse_config(base_config(tmp_path, [ayliea_source(sim.url, coverage_events=True)]))
    async with Harness(cfg) as h:
        running(h)
        scoped = await h.sweep()
        assert any("lacks scope recommendations:read" in n for n in scoped.record.notes)
        assert health_events(scoped) == [("new", "api_scope:recommendations:read")]
        world.plan = "business"
        world.stats.reset()
        refused = await h.sweep()
        assert world.stats.requests_total == 1  # nothing else is tried under such a plan
        assert any("Enterprise" in n for n in refused.record.notes)
        assert not any("lacks scope" in n for n in refused.record.notes)
        assert health_events(refused) == [("new", "plan")]
        reasons = h.health.ready()[1]["reasons"]
        assert any("does not include API access" in r for r in reasons)
        world.plan = "enterprise"
        world.keys[key] = {"scores:read", "recommendations:read"}
        healed = await h.sweep()
        assert health_events(healed) == [("resolved", "api_scope:recommendations:read"),
                                         ("resolved", "plan")]
        assert h.health.ready()[1]["status"] == "ready"


async def test_aether365_tenant_not_connected_is_a_coverage_reason(
        tmp_path: Path, aether365: tuple[Aether365World, RunningSim]) -> None:
    world, sim = aether365
    world.add_risky_user(T)
    cfg = parse_config(base_config(tmp_path, [aether365_source(
        sim.url, coverage_events=True, compliance=False)]))
    async with Harness(cfg) as h:
        running(h)
        await h.sweep()
        world.disconnect(T)
        cut = await h.sweep()
        assert cut.record.outcome == "incomplete"
        assert health_events(cut) == [("new", "tenant_connected")]
        assert any("not connected" in r for r in h.health.ready()[1]["reasons"])
        world.reconnect(T)
        assert health_events(await h.sweep()) == [("resolved", "tenant_connected")]
