"""Simulator behaviour the vendor documents describe and issue 21 needed: ScanOrbit accounts
(errors, deletion), Aether365 scan types and the plan quota's 429, Ayliea's Enterprise-only
403 and its X-RateLimit-Reset, over real HTTP."""

from __future__ import annotations

import time

from bridge.sim import Aether365World, AylieaWorld, ScanOrbitWorld

from .conftest import Client, FakeClock


async def test_scanorbit_accounts_report_errors_and_deleted_accounts_null_out(
        so: Client, so_world: ScanOrbitWorld) -> None:
    first, second = so_world.accounts
    finding = so_world.add_finding()
    owner = finding["awsAccountId"]
    so_world.set_account(first["id"], status="error", lastError="AccessDenied")
    listed = {a["id"]: a for a in (await so.json("/accounts"))["data"]}
    assert (listed[first["id"]]["status"], listed[first["id"]]["lastError"]) == (
        "error", "AccessDenied")
    assert len(listed[first["id"]]["awsAccountId"]) == 12  # the AWS account number
    so_world.delete_account(owner)
    listed_after = [a["id"] for a in (await so.json("/accounts"))["data"]]
    assert owner not in listed_after and len(listed_after) == 1
    shown = (await so.json(f"/findings/{finding['id']}"))["data"]
    assert shown["awsAccountId"] is None  # "null if account was deleted"
    assert {first["id"], second["id"]} >= {owner}


async def test_aether365_scan_types_and_the_plan_quota(
        ae: Client, ae_world: Aether365World) -> None:
    for test in ("C.1", "X.1"):
        ae_world.set_test("tenant-a", test, "failed")
    ae_world.run_scan("tenant-a", only=("C.1",))
    exposure = ae_world.run_scan("tenant-a", scan_type="exposure", only=("X.1",))
    ae_world.fail_scan("tenant-a", scan_type="exposure")
    scans = (await ae.json("/tenants/me/scans"))["data"]
    assert [(s["scan_type"], s["status"]) for s in scans] == [
        ("exposure", "failed"), ("exposure", "completed"), ("compliance", "completed")]
    rows = (await ae.json(f"/scans/{exposure['id']}/results"))["data"]
    assert [r["test_id"] for r in rows] == ["X.1"]

    ae_world.exhaust_quota("tenant-a", reset_in=120)
    refused = await ae.get("/tenants/me/threats")
    assert refused.status == 429 and refused.headers["Retry-After"] == "120"
    assert refused.json() == {"success": False, "error": {
        "code": "SCAN_PLAN_LIMIT_REACHED", "message": "Plan limit reached"}}
    assert ae_world.stats.rate_limited == 0  # a quota, not the per-minute limit
    ae_world.restore_quota("tenant-a")
    assert (await ae.get("/tenants/me/threats")).status == 200


async def test_ayliea_plan_without_api_access_and_rate_limit_reset(
        ay: Client, ay_world: AylieaWorld, clock: FakeClock) -> None:
    before = time.time()
    ok = await ay.get("/scores")
    reset = int(ok.headers["X-RateLimit-Reset"])
    assert reset >= before  # rounded up: waiting until it finds the window open
    assert int(ok.headers["X-RateLimit-Remaining"]) == ay_world.limiter.limit - 1
    ay_world.plan = "business"
    refused = await ay.get("/scores")
    assert refused.status == 403
    message = refused.json()["error"]
    assert "Enterprise" in message and "scope" not in message
