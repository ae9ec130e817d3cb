"""Aether365 → diff → SQLite, over real HTTP against the simulator: every kind's life cycle,
scan-gated results, threat categories that are not `ok`, error codes, several tenants."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge.config import BridgeConfig, ConfigError, parse_config
from bridge.model import EventType
from bridge.sim.aether365 import Aether365World
from bridge.sim.common import RunningSim
from bridge.sim.faults import Fault
from bridge.sources.aether365 import Aether365Config, Aether365Source
from bridge.sweep import SweepResult
from tests.conftest import SIM_AETHER365_KEYS, aether365_source, base_config
from tests.support.harness import Harness

Sim = tuple[Aether365World, RunningSim]
T = "tenant-contoso"
SCOPE = "aether365/contoso"
ONLY_RESULTS: dict[str, Any] = {"threats": False, "policies": False, "scores": False}
ONLY_THREATS: dict[str, Any] = {"compliance": False, "policies": False}
ONLY_POLICIES: dict[str, Any] = {"compliance": False, "threats": False}


def config(tmp_path: Path, url: str, **source: Any) -> BridgeConfig:
    return parse_config(base_config(tmp_path, [aether365_source(url, **source)]))


def seen(result: SweepResult) -> list[tuple[str, str, str]]:
    return sorted((e.type.value, e.kind, e.key) for e in result.events)


def failing(world: Aether365World) -> set[str]:
    return {t for t, r in world.tenant(T).tests.items() if r["result"] == "failed"}


# -- compliance results ---------------------------------------------------------------------

async def test_first_scan_makes_failed_tests_new_with_severity_and_framework(
    tmp_path: Path, aether365: Sim
) -> None:
    world, sim = aether365
    world.populate(T, tests=250, failing=30)
    world.set_test(T, "AE.1001", "failed", severity="Critical", framework="CIS M365")
    scan = world.run_scan(T)
    async with Harness(config(tmp_path, sim.url, **ONLY_RESULTS)) as h:
        result = await h.sweep()
    assert result.record.outcome == "complete"
    assert result.record.scope == SCOPE
    assert result.record.requests == 1 + 2  # the scan probe, then 250 results in pages of 200
    assert {e.key for e in result.events} == failing(world)
    assert {e.type.value for e in result.events} == {"new"}
    event = next(e for e in result.events if e.key == "AE.1001")
    assert (event.kind, event.severity, event.vendor_severity) == ("test_result", "critical",
                                                                   "Critical")
    assert event.attributes["framework"] == "CIS M365"
    assert event.attributes["scan_id"] == scan["id"]
    assert event.tenant == "contoso" and event.vendor == "aether365"


async def test_unchanged_latest_scan_costs_one_request_and_touches_nothing(
    tmp_path: Path, aether365: Sim
) -> None:
    world, sim = aether365
    world.populate(T, tests=40, failing=5)
    world.run_scan(T)
    async with Harness(config(tmp_path, sim.url, **ONLY_RESULTS)) as h:
        assert len((await h.sweep()).events) == 5
        world.set_test(T, "AE.1001", "passed")  # not scanned yet: invisible
        for _ in range(3):
            idle = await h.sweep()
            assert idle.record.outcome == "skipped" and idle.record.requests == 1
            assert idle.events == ()
        assert len(await h.store.list_items(scope=SCOPE, state="active")) == 5


async def test_new_completed_scan_resolves_passed_and_skipped_changes_and_reopens(
    tmp_path: Path, aether365: Sim
) -> None:
    world, sim = aether365
    for test_id in ("A", "B", "C", "D"):
        world.set_test(T, test_id, "failed", severity="high")
    world.set_test(T, "E", "passed")
    world.run_scan(T)
    async with Harness(config(tmp_path, sim.url, **ONLY_RESULTS)) as h:
        assert seen(await h.sweep()) == [("new", "test_result", k) for k in "ABCD"]
        world.set_test(T, "A", "passed")
        world.set_test(T, "B", "skipped")
        world.set_test(T, "C", "failed", severity="critical")
        world.set_test(T, "E", "failed")
        scan = world.run_scan(T)
        second = await h.sweep()
        assert seen(second) == [("changed", "test_result", "C"), ("new", "test_result", "E"),
                                ("resolved", "test_result", "A"), ("resolved", "test_result", "B")]
        reasons = {e.key: e.reason for e in second.events}
        assert reasons["A"] == f"test passed in scan {scan['id']}"
        assert reasons["B"] == f"test skipped in scan {scan['id']}"
        assert next(e for e in second.events if e.key == "C").changes == {
            "severity": ("high", "critical"), "vendor_severity": ("high", "critical")}
        world.set_test(T, "A", "failed")
        world.run_scan(T)
        third = await h.sweep()
    assert seen(third) == [("reopened", "test_result", "A")]
    assert third.events[0].counter == 3


async def test_skipped_tests_can_be_left_alone(tmp_path: Path, aether365: Sim) -> None:
    world, sim = aether365
    world.set_test(T, "A", "failed")
    world.set_test(T, "B", "failed")
    world.run_scan(T)
    async with Harness(config(tmp_path, sim.url, skipped_resolves=False, **ONLY_RESULTS)) as h:
        await h.sweep()
        world.set_test(T, "A", "skipped")
        world.set_test(T, "C", "skipped")  # never failed: not created either
        for _ in range(3):  # more scans than resolve_after_misses: skipped is not a miss
            world.run_scan(T)
            assert (await h.sweep()).events == ()
        active = {row.key for row in await h.store.list_items(scope=SCOPE, state="active")}
    assert active == {"A", "B"}


async def test_scan_in_progress_or_failed_is_not_a_sweep(tmp_path: Path, aether365: Sim) -> None:
    world, sim = aether365
    world.set_test(T, "A", "failed")
    world.run_scan(T)
    async with Harness(config(tmp_path, sim.url, **ONLY_RESULTS)) as h:
        await h.sweep()
        world.set_test(T, "A", "passed")
        running = world.start_scan(T)
        assert (await h.sweep()).record.outcome == "skipped"
        world.fail_scan(T, scan_id=running["id"])
        assert (await h.sweep()).record.outcome == "skipped"
        world.run_scan(T)
        assert seen(await h.sweep()) == [("resolved", "test_result", "A")]


async def test_only_scans_of_the_configured_type_count(tmp_path: Path, aether365: Sim) -> None:
    world, sim = aether365
    world.set_test(T, "A", "failed")
    world.run_scan(T)
    async with Harness(config(tmp_path, sim.url, scan_type="compliance", **ONLY_RESULTS)) as h:
        assert seen(await h.sweep()) == [("new", "test_result", "A")]
        world.set_test(T, "A", "passed")
        world.run_scan(T, scan_type="exposure")
        assert (await h.sweep()).record.outcome == "skipped"
        world.run_scan(T)
        assert seen(await h.sweep()) == [("resolved", "test_result", "A")]


async def test_missing_total_pages_is_computed(tmp_path: Path, aether365: Sim) -> None:
    world, sim = aether365
    world.omit_total_pages = True
    world.populate(T, tests=450, failing=450)
    world.run_scan(T)
    async with Harness(config(tmp_path, sim.url, **ONLY_RESULTS)) as h:
        result = await h.sweep()
    assert result.record.outcome == "complete" and result.record.requests == 1 + 3
    assert len(result.events) == 450


async def test_an_incomplete_scan_sweep_is_repeated_next_cycle(
    tmp_path: Path, aether365: Sim
) -> None:
    world, sim = aether365
    world.populate(T, tests=300, failing=300)
    world.run_scan(T)
    world.faults.add(Fault(kind="status", path="/results$", page=2, status=503, times=-1))
    async with Harness(config(tmp_path, sim.url, **ONLY_RESULTS)) as h:
        broken = await h.sweep()
        assert broken.record.outcome == "incomplete" and len(broken.events) == 200
        assert "503" in broken.record.notes[0]
        world.faults.clear()
        healed = await h.sweep()  # the cursor did not move: the same scan is swept again
        assert healed.record.outcome == "complete" and len(healed.events) == 100
        assert (await h.sweep()).record.outcome == "skipped"


# -- threat alerts --------------------------------------------------------------------------

async def test_risky_user_new_changed_resolved_reopened(tmp_path: Path, aether365: Sim) -> None:
    world, sim = aether365
    world.add_risky_user(T, user_id="u2", upn="bo@contoso.example")
    world.add_risky_user(T, user_id="u1", upn="al@contoso.example", risk_level="high")
    async with Harness(config(tmp_path, sim.url, **ONLY_THREATS)) as h:
        first = await h.sweep()
        event = next(e for e in first.events if e.key == "u1")
        assert (event.type.value, event.kind, event.severity) == ("new", "risky_user", "high")
        assert event.title == "Risky user al@contoso.example"
        world.update_risky_user(T, "u1", riskLevel="medium")
        changed = await h.sweep()
        assert seen(changed) == [("changed", "risky_user", "u1")]
        assert changed.events[0].changes == {"severity": ("high", "medium"),
                                             "vendor_severity": ("high", "medium")}
        world.update_risky_user(T, "u1", riskState="remediated", riskLevel="none")
        resolved = await h.sweep()
        assert seen(resolved) == [("resolved", "risky_user", "u1")]
        assert resolved.events[0].reason == "risk level none"
        world.update_risky_user(T, "u1", riskState="atRisk", riskLevel="high")
        assert seen(await h.sweep()) == [("reopened", "risky_user", "u1")]
        world.update_risky_user(T, "u1", riskState="dismissed")
        assert seen(await h.sweep()) == [("resolved", "risky_user", "u1")]


async def test_risk_detection_and_alert_cycles(tmp_path: Path, aether365: Sim) -> None:
    world, sim = aether365
    world.add_risk_detection(T, detection_id="d1", risk_level="high")
    world.add_risk_detection(T, detection_id="d2")
    world.add_alert(T, alert_id="a1", severity="high", title="Forwarding rule")
    async with Harness(config(tmp_path, sim.url, **ONLY_THREATS)) as h:
        assert seen(await h.sweep()) == [("new", "risk_detection", "d1"),
                                         ("new", "risk_detection", "d2"),
                                         ("new", "security_alert", "a1")]
        world.update_alert(T, "a1", status="inProgress")
        world.update_threat(T, "riskDetections", "d1", riskLevel="low")
        changed = await h.sweep()
        assert seen(changed) == [("changed", "risk_detection", "d1"),
                                 ("changed", "security_alert", "a1")]
        assert {e.key: e.changes for e in changed.events}["a1"] == {"status": ("new", "inProgress")}
        world.update_alert(T, "a1", status="resolved")
        world.remove_risk_detection(T, "d1")  # aged out of the snapshot: absent twice
        assert seen(await h.sweep()) == [("resolved", "security_alert", "a1")]
        assert seen(await h.sweep()) == [("resolved", "risk_detection", "d1")]
        world.update_alert(T, "a1", status="new")
        world.add_risk_detection(T, detection_id="d1")
        assert seen(await h.sweep()) == [("reopened", "risk_detection", "d1"),
                                         ("reopened", "security_alert", "a1")]


async def test_category_in_error_neither_creates_nor_resolves(
    tmp_path: Path, aether365: Sim
) -> None:
    world, sim = aether365
    world.add_risky_user(T, user_id="u1")
    world.add_alert(T, alert_id="a1")
    async with Harness(config(tmp_path, sim.url, **ONLY_THREATS)) as h:
        await h.sweep()
        world.update_risky_user(T, "u1", riskState="remediated")
        world.add_risky_user(T, user_id="u2")
        world.add_alert(T, alert_id="a2")
        world.set_source(T, "riskyUsers", "error")
        for _ in range(3):
            result = await h.sweep()
            assert result.record.outcome == "incomplete"
            assert seen(result) in ([("new", "security_alert", "a2")], [])
            assert "riskyUsers source is error" in " ".join(result.record.notes)
        world.set_source(T, "riskyUsers", "ok")
        healed = await h.sweep()
    assert seen(healed) == [("new", "risky_user", "u2"), ("resolved", "risky_user", "u1")]


@pytest.mark.parametrize("state", ["needsConsent", "notLicensed"])
async def test_configuration_states_are_noted_once_not_outages(
    state: str, tmp_path: Path, aether365: Sim
) -> None:
    world, sim = aether365
    world.add_alert(T, alert_id="a1")
    world.add_risky_user(T, user_id="u1")
    async with Harness(config(tmp_path, sim.url, **ONLY_THREATS)) as h:
        await h.sweep()
        world.set_source(T, "riskyUsers", state)
        with capture_logs() as logs:
            results = [await h.sweep() for _ in range(3)]
        assert [r.record.outcome for r in results] == ["complete"] * 3
        assert all(r.events == () for r in results)  # u1 is neither resolved nor missed
        note = results[-1].record.notes[0]
        assert f"riskyUsers is {state}" in note
        conditions = [entry for entry in logs if entry["event"] == "source_condition"]
        assert len(conditions) == 1 and conditions[0]["state"] == state
        # What `bridge state sweeps` and `/readyz` show.
        assert note in (await h.store.sweeps(scope=SCOPE, limit=1))[0].notes
        _, detail = h.health.ready()
        assert note in detail["sources"][SCOPE]["notes"]
        world.set_source(T, "riskyUsers", "ok")
        with capture_logs() as logs:
            assert (await h.sweep()).record.notes == ()
        assert [e["event"] for e in logs].count("source_condition_cleared") == 1
        active = {row.key for row in await h.store.list_items(scope=SCOPE, state="active")}
    assert active == {"a1", "u1"}


# -- policies -------------------------------------------------------------------------------

async def test_policy_new_resolved_reopened_changed(tmp_path: Path, aether365: Sim) -> None:
    world, sim = aether365
    world.default_policies(T, compliant=2)
    async with Harness(config(tmp_path, sim.url, **ONLY_POLICIES)) as h:
        first = await h.sweep()
        weak = {"guestInviteRestrictions", "externalSharing", "userConsentToApps"}
        assert seen(first) == sorted(("new", "policy", k) for k in weak)
        assert {e.status for e in first.events} == {"non-compliant"}
        assert first.events[0].attributes["current"] is not None
        world.set_policy(T, "externalSharing", current="existingGuests")
        world.set_policy(T, "securityDefaults", current=False)
        second = await h.sweep()
        assert seen(second) == [("new", "policy", "securityDefaults"),
                                ("resolved", "policy", "externalSharing")]
        world.set_policy(T, "externalSharing", current="anyone")
        world.set_policy(T, "userConsentToApps", title="Users may consent to any app")
        third = await h.sweep()
    assert seen(third) == [("changed", "policy", "userConsentToApps"),
                           ("reopened", "policy", "externalSharing")]


# -- tenants, keys and errors ---------------------------------------------------------------

async def test_each_tenant_is_its_own_scope_with_its_own_bucket(
    tmp_path: Path, aether365: Sim
) -> None:
    world, sim = aether365
    for tenant in ("tenant-contoso", "tenant-fabrikam"):
        world.set_test(tenant, "AE.1", "failed")
        world.run_scan(tenant)
    cfg = config(tmp_path, sim.url, tenants=("contoso", "fabrikam"), scores=False)
    async with Harness(cfg) as h:
        source = h.source()
        assert isinstance(source, Aether365Source)
        assert source.scopes == ("aether365/contoso", "aether365/fabrikam")
        buckets = {id(source.client(scope).limiter) for scope in source.scopes}
        assert len(buckets) == 2
        a = await h.sweep("aether365/contoso")
        b = await h.sweep("aether365/fabrikam")
        world.set_test("tenant-fabrikam", "AE.1", "passed")
        world.run_scan("tenant-fabrikam")
        assert (await h.sweep("aether365/contoso")).events == ()
        c = await h.sweep("aether365/fabrikam")
    assert [(e.scope, e.tenant, e.type.value) for e in (*a.events, *b.events, *c.events)] == [
        ("aether365/contoso", "contoso", "new"), ("aether365/fabrikam", "fabrikam", "new"),
        ("aether365/fabrikam", "fabrikam", "resolved")]


async def test_tenants_swept_at_once_each_count_their_own_requests(
    tmp_path: Path, aether365: Sim
) -> None:
    """The daemon sweeps a source's tenants at the same time: each sweep record (and its
    progress line) counts its own tenant's requests, not those the others made meanwhile."""
    world, sim = aether365
    world.populate("tenant-contoso", tests=450, failing=3)  # 3 pages of 200
    world.populate("tenant-fabrikam", tests=50, failing=3)  # 1 page
    for tenant in ("tenant-contoso", "tenant-fabrikam"):
        world.run_scan(tenant)
    cfg = config(tmp_path, sim.url, tenants=("contoso", "fabrikam"), **ONLY_RESULTS)
    async with Harness(cfg) as h:
        contoso, fabrikam = await asyncio.gather(h.sweep("aether365/contoso"),
                                                 h.sweep("aether365/fabrikam"))
    assert (contoso.record.outcome, fabrikam.record.outcome) == ("complete", "complete")
    assert contoso.record.requests == 1 + 3  # the scan probe, then its result pages
    assert fabrikam.record.requests == 1 + 1


async def test_revoked_key_one_clear_error_per_interval_then_recovers(
    tmp_path: Path, aether365: Sim
) -> None:
    world, sim = aether365
    key = SIM_AETHER365_KEYS["contoso"]
    world.set_test(T, "A", "failed")
    world.run_scan(T)
    async with Harness(config(tmp_path, sim.url, scores=False)) as h:
        world.expire(key)
        with capture_logs() as logs:
            failed = [await h.sweep() for _ in range(3)]
        for result in failed:
            assert result.record.outcome == "failed" and result.record.requests == 1
            assert result.error is not None and result.error.kind == "auth"
            assert "AUTH_EXPIRED_TOKEN" in (result.record.error or "")
            assert key not in (result.record.error or "")
        errors = [e for e in logs if e["log_level"] == "error"]
        assert [e["event"] for e in errors] == ["sweep_failed"] * 3
        assert not any(key in repr(e) for e in logs)
        _, detail = h.health.ready()
        assert "AUTH_EXPIRED_TOKEN" in detail["sources"][SCOPE]["error"]
        world.renew(key)
        healed = await h.sweep()
    assert healed.record.outcome == "complete" and seen(healed) == [("new", "test_result", "A")]


async def test_tenant_not_connected_degrades_without_failing(
    tmp_path: Path, aether365: Sim
) -> None:
    world, sim = aether365
    world.add_alert(T, alert_id="a1")
    world.default_policies(T)
    async with Harness(config(tmp_path, sim.url)) as h:
        await h.sweep()
        world.update_alert(T, "a1", status="resolved")
        world.disconnect(T)
        for _ in range(3):
            result = await h.sweep()
            assert result.record.outcome == "incomplete" and result.record.requests == 1
            assert result.events == ()
            assert "TENANT_NOT_CONNECTED" in result.record.notes[0]
            assert "not connected" in result.record.notes[1]
        world.reconnect(T)
        assert seen(await h.sweep()) == [("resolved", "security_alert", "a1")]


async def test_internal_error_in_a_200_body_is_retried(tmp_path: Path, aether365: Sim) -> None:
    world, sim = aether365
    world.add_alert(T, alert_id="a1")
    world.faults.add(Fault(kind="envelope_error", path="/threats$", code="INTERNAL_ERROR"))
    async with Harness(config(tmp_path, sim.url, **ONLY_THREATS)) as h:
        result = await h.sweep()
    assert result.record.outcome == "complete" and result.record.requests == 2
    assert seen(result) == [("new", "security_alert", "a1")]


async def test_validation_error_is_a_bug_report_not_a_retry_loop(
    tmp_path: Path, aether365: Sim
) -> None:
    world, sim = aether365
    world.set_test(T, "A", "failed")
    world.run_scan(T)
    world.faults.add(Fault(kind="status", path="/results$", status=400, code="VALIDATION_ERROR",
                           times=-1))
    async with Harness(config(tmp_path, sim.url, **ONLY_RESULTS)) as h:
        with capture_logs() as logs:
            result = await h.sweep()
    assert result.record.outcome == "incomplete"
    assert result.record.requests == 2  # the probe and one page: no retry
    bug = [e for e in logs if e["event"] == "vendor_rejected_request"]
    assert len(bug) == 1 and "bug in bridge" in bug[0]["hint"]
    assert "VALIDATION_ERROR" in bug[0]["error"]


async def test_schema_mismatch_names_the_field(tmp_path: Path, aether365: Sim) -> None:
    """A row without its key is skipped on its own, named by its position and field; the
    other rows of its page still count, and nothing resolves."""
    world, sim = aether365
    world.set_test(T, "A", "failed")
    world.set_test(T, "B", "failed")
    world.run_scan(T)
    world.tenant(T).tests["A"].pop("test_id")  # the row really lacks its key
    world.run_scan(T)
    async with Harness(config(tmp_path, sim.url, **ONLY_RESULTS)) as h:
        with capture_logs() as logs:
            result = await h.sweep()
    assert result.record.outcome == "incomplete"
    assert "data.0.test_id" in result.record.notes[0]
    assert [e.key for e in result.events] == ["B"]
    skipped = [e for e in logs if e["event"] == "vendor_items_skipped"]
    assert len(skipped) == 1 and skipped[0]["problems"][0].startswith("data.0.test_id")
    assert skipped[0]["ids"] == ["<row 0>"] and skipped[0]["kind"] == "test_result"


async def test_an_unreadable_threat_spoils_only_its_own_category(
    tmp_path: Path, aether365: Sim
) -> None:
    """A risky user whose id is an object is skipped (by its position: it has no usable id);
    its category resolves nothing while it is there, the other categories carry on."""
    world, sim = aether365
    for n in range(3):
        world.add_risky_user(T, user_id=f"u{n}")
        world.add_risk_detection(T, detection_id=f"d{n}")
    async with Harness(config(tmp_path, sim.url, **ONLY_THREATS)) as h:
        await h.sweep()
        world.update_risky_user(T, "u1", id={"oid": "u1"})
        world.remove_risky_user(T, "u2")
        world.remove_risk_detection(T, "d2")
        swept = [await h.sweep() for _ in range(2)]
    for result in swept:
        assert result.record.outcome == "incomplete"
        assert "threats data.riskyUsers: skipped 1 row(s)" in result.record.notes[0]
        assert "<row 1>: data.riskyUsers.1.id" in result.record.notes[0]
    resolved = {e.key for r in swept for e in r.events if e.type is EventType.RESOLVED}
    assert resolved == {"d2"}  # not u1 (unreadable) nor u2 (its category is incomplete)


# -- configuration --------------------------------------------------------------------------

def test_tenant_keys_can_come_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "contoso.key"
    secret.write_text(SIM_AETHER365_KEYS["contoso"] + "\n")
    source = aether365_source("http://127.0.0.1:1")
    source["tenants"] = [{"name": "contoso", "api_key_file": str(secret)}]
    cfg = parse_config(base_config(tmp_path, [source]))
    assert isinstance(cfg.sources[0], Aether365Config)
    tenant = cfg.sources[0].tenants[0]
    assert tenant.api_key.get_secret_value() == SIM_AETHER365_KEYS["contoso"]


async def test_a_single_key_is_one_scope_named_after_the_source(
    tmp_path: Path, aether365: Sim
) -> None:
    world, sim = aether365
    world.set_test(T, "A", "failed")
    world.run_scan(T)
    source = aether365_source(sim.url, api_key=SIM_AETHER365_KEYS["contoso"], tenant="Contoso",
                              **ONLY_RESULTS)
    del source["tenants"]
    async with Harness(parse_config(base_config(tmp_path, [source]))) as h:
        assert h.source().scopes == ("aether365",)
        result = await h.sweep()
    assert [(e.scope, e.tenant) for e in result.events] == [("aether365", "Contoso")]


@pytest.mark.parametrize(("change", "problem"), [
    ({"api_key": SIM_AETHER365_KEYS["contoso"]}, "set either api_key"),
    ({"tenants": []}, "set either api_key"),
    ({"tenants": [{"name": "x", "api_key": "ae_live_fake_sim_1"},
                  {"name": "x", "api_key": "ae_live_fake_sim_2"}]}, "duplicate tenant name"),
    ({"tenants": [{"name": "x", "api_key": "ae_live_fake_sim_1", "apikey": "typo"}]},
     "sources[0].tenants[0].apikey"),
])
def test_key_configuration_errors_name_the_problem(
    change: dict[str, Any], problem: str, tmp_path: Path
) -> None:
    source = aether365_source("http://127.0.0.1:1")
    source.update(change)
    with pytest.raises(ConfigError) as info:
        parse_config(base_config(tmp_path, [source]))
    assert problem in str(info.value)
