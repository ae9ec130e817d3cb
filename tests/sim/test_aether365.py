"""Aether365 simulator over real HTTP: tokens, tenants, scans, results, threats, policies."""

from __future__ import annotations

import random

import aiohttp
import pytest

from bridge.sim import Aether365World, Fault, RunningSim, make_aether365_app

from .conftest import AE_TOKEN_A, AE_TOKEN_B, Client, FakeClock

RESULT_FIELDS = {"id", "scan_id", "test_id", "title", "result", "severity", "framework",
                 "help_url", "remediation_steps", "source_tool"}
SCAN_FIELDS = {"id", "tenant_id", "scan_type", "status", "started_at", "completed_at",
               "pass_count", "fail_count", "skip_count", "score"}


def _error(reply_json: dict[str, object]) -> object:
    assert reply_json["success"] is False
    error = reply_json["error"]
    assert isinstance(error, dict)
    return error["code"]


async def test_token_errors(ae: Client, ae_world: Aether365World) -> None:
    missing = await ae.get("/tenants/me/scans", headers={})
    assert missing.status == 401 and _error(missing.json()) == "AUTH_MISSING_TOKEN"
    for header in ("Bearer ae_live_fake_sim_unknown", "Basic abc", "Bearer "):
        bad = await ae.get("/tenants/me/scans", headers={"Authorization": header})
        assert bad.status == 401 and _error(bad.json()) == "AUTH_INVALID_TOKEN", header
    ae_world.expire(AE_TOKEN_A)
    expired = await ae.get("/tenants/me/scans")
    assert expired.status == 401 and _error(expired.json()) == "AUTH_EXPIRED_TOKEN"
    ae_world.renew(AE_TOKEN_A)
    assert (await ae.get("/tenants/me/scans")).status == 200
    ae_world.tokens["ae_live_fake_sim_orphan"] = "no-such-tenant"
    orphan = await ae.get("/tenants/me/scans",
                          headers={"Authorization": "Bearer ae_live_fake_sim_orphan"})
    assert orphan.status == 404 and _error(orphan.json()) == "TENANT_NOT_FOUND"
    ae_world.revoke(AE_TOKEN_A)
    assert _error((await ae.get("/tenants/me/scans")).json()) == "AUTH_INVALID_TOKEN"


async def test_disconnected_tenant(ae: Client, ae_world: Aether365World) -> None:
    ae_world.disconnect("tenant-a")
    for path in ("/tenants/me/scans", "/tenants/me/threats", "/tenants/me/policies"):
        reply = await ae.get(path)
        assert reply.status == 403 and _error(reply.json()) == "TENANT_NOT_CONNECTED", path
    other = Client(ae.session, ae.base, {"Authorization": f"Bearer {AE_TOKEN_B}"})
    assert (await other.get("/tenants/me/threats")).status == 200
    ae_world.reconnect("tenant-a")
    assert (await ae.get("/tenants/me/threats")).status == 200


async def test_latest_completed_scan_and_snapshots(ae: Client, ae_world: Aether365World) -> None:
    ae_world.populate("tenant-a", tests=12, failing=4)
    first = ae_world.run_scan("tenant-a")
    ae_world.start_scan("tenant-a")
    ae_world.fail_scan("tenant-a")
    body = await ae.json("/tenants/me/scans", status="completed", limit=1)
    assert [s["id"] for s in body["data"]] == [first["id"]]
    assert body["meta"] == {"total": 1, "page": 1, "limit": 1, "totalPages": 1}
    assert set(body["data"][0]) == SCAN_FIELDS
    assert body["data"][0]["fail_count"] == 4
    everything = await ae.json("/tenants/me/scans")
    assert [s["status"] for s in everything["data"]] == ["failed", "in_progress", "completed"]
    assert (await ae.get("/tenants/me/scans", status="done")).status == 400

    # A new scan snapshots current results: new result ids, same test ids.
    ae_world.set_test("tenant-a", "AE.1001", "passed")
    second = ae_world.run_scan("tenant-a")
    old = (await ae.json(f"/scans/{first['id']}/results", limit=200))["data"]
    new = (await ae.json(f"/scans/{second['id']}/results", limit=200))["data"]
    assert set(old[0]) == RESULT_FIELDS
    assert {r["test_id"] for r in old} == {r["test_id"] for r in new}
    assert not {r["id"] for r in old} & {r["id"] for r in new}
    by_test = {r["test_id"]: r["result"] for r in new}
    assert by_test["AE.1001"] == "passed"
    assert {r["test_id"]: r["result"] for r in old}["AE.1001"] == "failed"
    single = (await ae.json(f"/scans/{second['id']}"))["data"]
    assert single["status"] == "completed" and single["fail_count"] == 3


async def test_results_paging_filters_and_validation(ae: Client,
                                                     ae_world: Aether365World) -> None:
    for n in range(130):
        ae_world.set_test("tenant-a", f"T.{n:03d}", "failed" if n % 2 else "passed",
                          severity="critical" if n % 4 == 1 else "low", framework="CIS M365")
    scan = ae_world.run_scan("tenant-a")
    path = f"/scans/{scan['id']}/results"
    page = await ae.json(path)
    assert len(page["data"]) == 50
    assert page["meta"] == {"total": 130, "page": 1, "limit": 50, "totalPages": 3}
    assert len((await ae.json(path, limit=200))["data"]) == 130
    # The vendor's own example sends capitalised values; matching is case-insensitive.
    crit = await ae.json(path, result="Failed", severity="Critical", page=1, limit=100)
    assert crit["meta"]["total"] == 33
    assert {(r["result"], r["severity"]) for r in crit["data"]} == {("failed", "critical")}
    assert (await ae.json(path, framework="cis m365"))["meta"]["total"] == 130
    assert (await ae.json(path, framework="ISO 27001"))["meta"]["total"] == 0
    for params in ({"limit": 201}, {"limit": 0}, {"page": 0}, {"result": "broken"},
                   {"severity": "urgent"}):
        reply = await ae.get(path, **params)
        assert reply.status == 400 and _error(reply.json()) == "VALIDATION_ERROR", params


async def test_tenant_isolation(ae: Client, ae_world: Aether365World) -> None:
    ae_world.populate("tenant-b", tests=3, failing=1)
    foreign = ae_world.run_scan("tenant-b")
    for path in (f"/scans/{foreign['id']}", f"/scans/{foreign['id']}/results",
                 "/scans/not-a-scan/results"):
        reply = await ae.get(path)
        assert reply.status == 404 and _error(reply.json()) == "SCAN_NOT_FOUND", path
    assert (await ae.json("/tenants/me/scans"))["data"] == []
    other = Client(ae.session, ae.base, {"Authorization": f"Bearer {AE_TOKEN_B}"})
    assert (await other.json(f"/scans/{foreign['id']}/results"))["meta"]["total"] == 3


async def test_omit_total_pages(ae: Client, ae_world: Aether365World) -> None:
    ae_world.populate("tenant-a", tests=5, failing=5)
    scan = ae_world.run_scan("tenant-a")
    ae_world.omit_total_pages = True
    meta = (await ae.json(f"/scans/{scan['id']}/results", limit=2))["meta"]
    assert meta == {"total": 5, "page": 1, "limit": 2}


async def test_threat_snapshot_and_sources(ae: Client, ae_world: Aether365World) -> None:
    user = ae_world.add_risky_user("tenant-a", upn="kim@contoso.example", risk_level="high")
    detection = ae_world.add_risk_detection("tenant-a")
    alert = ae_world.add_alert("tenant-a", severity="high")
    data = (await ae.json("/tenants/me/threats"))["data"]
    assert data["aiPilotConnected"] is True and data["msTenantId"]
    assert data["sources"] == {"riskyUsers": "ok", "riskDetections": "ok",
                               "securityAlerts": "ok"}
    assert data["riskyUsers"] == [user]
    assert set(user) == {"id", "userPrincipalName", "displayName", "riskLevel", "riskState",
                         "riskLastUpdatedDateTime"}
    assert set(data["riskDetections"][0]) == {"id", "userPrincipalName", "riskEventType",
                                              "riskLevel", "detectedDateTime", "ipAddress",
                                              "location"}
    assert [a["id"] for a in data["securityAlerts"]] == [alert["id"]]
    assert set(alert) == {"id", "title", "severity", "status", "createdDateTime", "category"}

    ae_world.update_risky_user("tenant-a", user["id"], riskLevel="none", riskState="remediated")
    ae_world.set_source("tenant-a", "riskDetections", "needsConsent")
    ae_world.remove_alert("tenant-a", alert["id"])
    data = (await ae.json("/tenants/me/threats"))["data"]
    assert data["riskyUsers"][0]["riskState"] == "remediated"
    assert data["riskDetections"] == [] and data["sources"]["riskDetections"] == "needsConsent"
    assert data["securityAlerts"] == []
    ae_world.set_source("tenant-a", "riskDetections", "ok")
    assert [d["id"] for d in (await ae.json("/tenants/me/threats"))["data"]["riskDetections"]] \
        == [detection["id"]]
    with pytest.raises(KeyError):
        ae_world.set_source("tenant-a", "nonsense", "ok")


async def test_policies(ae: Client, ae_world: Aether365World) -> None:
    ae_world.default_policies("tenant-a", compliant=2)
    ae_world.set_policy("tenant-a", "custom", title="Custom", current=1, secure=2)
    body = await ae.json("/tenants/me/policies")
    assert body["meta"]["total"] == 6
    policies = {p["key"]: p for p in body["data"]}
    assert set(policies["custom"]) == {"key", "title", "current", "secure", "compliant"}
    assert [p["compliant"] for p in body["data"]] == [True, True, False, False, False, False]
    ae_world.set_policy("tenant-a", "custom", current=2)
    assert {p["key"]: p for p in (await ae.json("/tenants/me/policies"))["data"]}[
        "custom"]["compliant"] is True


async def test_rate_limit_is_per_token(session: aiohttp.ClientSession, clock: FakeClock) -> None:
    world = Aether365World(tokens={AE_TOKEN_A: "tenant-a", AE_TOKEN_B: "tenant-a"},
                           rate_limit=3, rate_window=10.0, clock=clock)
    async with RunningSim(make_aether365_app(world)) as sim:
        a, b = (Client(session, sim.url, {"Authorization": f"Bearer {t}"})
                for t in (AE_TOKEN_A, AE_TOKEN_B))
        for _ in range(3):
            assert (await a.get("/tenants/me/scans")).status == 200
        clock.advance(2.5)
        limited = await a.get("/tenants/me/scans")
        assert limited.status == 429 and limited.headers["Retry-After"] == "8"
        assert _error(limited.json()) == "RATE_LIMIT_EXCEEDED"
        assert (await b.get("/tenants/me/scans")).status == 200  # another token, own budget
        clock.advance(7.5)
        assert (await a.get("/tenants/me/scans")).status == 200
        assert len(world.stats.served_429) == 1


async def test_faults_in_the_envelope(ae: Client, ae_world: Aether365World) -> None:
    ae_world.populate("tenant-a", tests=60, failing=60)
    scan = ae_world.run_scan("tenant-a")
    path = f"/scans/{scan['id']}/results"
    ae_world.faults.add(Fault("envelope_error", path="/results$", code="INTERNAL_ERROR"))
    reply = await ae.get(path)
    assert reply.status == 200 and _error(reply.json()) == "INTERNAL_ERROR"
    ae_world.faults.add(Fault("status", path="/results$", status=500))
    reply = await ae.get(path)
    assert reply.status == 500 and _error(reply.json()) == "INTERNAL_ERROR"
    ae_world.faults.add(Fault("empty", path="/threats$"))
    ae_world.add_risky_user("tenant-a")
    data = (await ae.json("/tenants/me/threats"))["data"]
    assert data["riskyUsers"] == [] and data["sources"]["riskyUsers"] == "ok"
    ae_world.faults.add(Fault("empty", path="/results$", page=2))
    page2 = await ae.json(path, page=2)
    assert page2["data"] == [] and page2["meta"]["total"] == 60


async def test_drift_on_results_and_scan_list(ae: Client, ae_world: Aether365World) -> None:
    ae_world.populate("tenant-a", tests=20, failing=20)
    scan = ae_world.run_scan("tenant-a")
    path = f"/scans/{scan['id']}/results"
    ae_world.faults.add(Fault("drift", path="/results$", page=1, drift=3))
    page1 = (await ae.json(path, limit=10))["data"]
    page2 = await ae.json(path, page=2, limit=10)
    assert [r["id"] for r in page2["data"][:3]] == [r["id"] for r in page1[7:]]
    assert page2["meta"]["total"] == 23
    ae_world.faults.add(Fault("drift", path="/tenants/me/scans$"))
    await ae.json("/tenants/me/scans")
    assert len(ae_world.tenants["tenant-a"].scan_ids) == 2


def test_random_step_touches_every_kind() -> None:
    world = Aether365World(tokens={AE_TOKEN_A: "tenant-a"}, seed=5)
    world.populate("tenant-a", tests=10, failing=3)
    world.default_policies("tenant-a")
    rng = random.Random(1)
    notes = [world.random_step(rng) for _ in range(60)]
    assert any("scan" in n for n in notes) and any("risky user" in n for n in notes)
    assert any("alert" in n for n in notes) and any("policy" in n for n in notes)
    assert world.latest_completed("tenant-a") is not None
