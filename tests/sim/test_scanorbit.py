"""ScanOrbit simulator over real HTTP: auth, pages, order, filters, scans, rate limit, faults."""

from __future__ import annotations

import time

import aiohttp
import pytest

from bridge.sim import Fault, RunningSim, ScanOrbitWorld, make_scanorbit_app

from .conftest import SO_KEY, SO_KEY_2, Client, FakeClock

FINDING_FIELDS = {
    "id", "orgId", "awsAccountId", "resourceId", "certificateId", "type", "severity", "summary",
    "details", "status", "resolvedAt", "snoozedUntil", "firstDetectedAt", "lastDetectedAt",
    "detectionCount", "lastScanId", "createdAt", "updatedAt",
}


async def test_auth_errors(so: Client, so_world: ScanOrbitWorld) -> None:
    missing = await so.get("/findings", headers={})
    assert missing.status == 401 and missing.json()["error"] == "UNAUTHORIZED"
    assert "message" in missing.json()
    bad = await so.get("/findings", headers={"X-API-Key": "sk_live_fake_sim_unknown"})
    assert bad.status == 401 and bad.json()["error"] == "UNAUTHORIZED"
    so_world.revoke(SO_KEY)
    assert (await so.get("/organization")).status == 401
    assert (await so.get("/organization", headers={"X-API-Key": SO_KEY_2})).status == 200
    so_world.restore(SO_KEY)
    assert (await so.get("/organization")).status == 200
    so_world.tier = "pro"
    forbidden = await so.get("/organization")
    assert forbidden.status == 403 and forbidden.json()["error"] == "FORBIDDEN"


async def test_pagination_totals_and_validation(so: Client, so_world: ScanOrbitWorld) -> None:
    for _ in range(120):
        so_world.add_finding()
    body = await so.json("/findings")
    assert len(body["data"]) == 50
    assert body["pagination"] == {"page": 1, "limit": 50, "total": 120, "totalPages": 3}
    last = await so.json("/findings", page=2, limit=100)
    assert len(last["data"]) == 20 and last["pagination"]["totalPages"] == 2
    past = await so.json("/findings", page=9, limit=100)
    assert past["data"] == [] and past["pagination"] == {
        "page": 9, "limit": 100, "total": 120, "totalPages": 2}
    for params in ({"limit": 101}, {"limit": 0}, {"limit": "ten"}, {"page": 0}, {"page": "x"},
                   {"status": "closed"}):
        reply = await so.get("/findings", **params)
        assert reply.status == 400, params
        assert reply.json()["error"] == "VALIDATION_ERROR"


async def test_newest_first_and_complete_sweep(so: Client, so_world: ScanOrbitWorld) -> None:
    added = [so_world.add_finding()["id"] for _ in range(25)]
    seen: list[str] = []
    for page in (1, 2, 3):
        seen += [f["id"] for f in (await so.json("/findings", page=page, limit=10))["data"]]
    assert seen == added[::-1]
    first = (await so.json("/findings", limit=1))["data"][0]
    assert set(first) == FINDING_FIELDS
    assert first["status"] == "open" and first["severity"] in ("low", "medium", "high")


async def test_filters(so: Client, so_world: ScanOrbitWorld) -> None:
    crit = so_world.add_finding(severity="critical", type="ssl_expiry")
    other = so_world.add_finding(severity="low", type="orphaned_eip")
    so_world.resolve(other["id"])
    assert [f["id"] for f in (await so.json("/findings", severity="critical"))["data"]] == [
        crit["id"]]
    assert [f["id"] for f in (await so.json("/findings", status="resolved"))["data"]] == [
        other["id"]]
    assert (await so.json("/findings", type="orphaned_eip"))["pagination"]["total"] == 1
    by_resource = await so.json("/findings", resourceId=crit["resourceId"])
    assert [f["id"] for f in by_resource["data"]] == [crit["id"]]
    by_account = await so.json("/findings", awsAccountId=crit["awsAccountId"])
    assert crit["id"] in {f["id"] for f in by_account["data"]}
    resolved = so_world.get(other["id"])
    assert resolved["resolvedAt"] is not None and resolved["updatedAt"] >= resolved["createdAt"]
    so_world.set_status(crit["id"], "resolved")  # filters see mutations at once
    assert (await so.json("/findings", status="resolved"))["pagination"]["total"] == 2


async def test_finding_detail_and_removal(so: Client, so_world: ScanOrbitWorld) -> None:
    ssl_finding = so_world.add_finding(type="ssl_expiry")
    volume = so_world.add_finding(type="orphaned_volume")
    detail = (await so.json(f"/findings/{ssl_finding['id']}"))["data"]
    assert detail["resource"]["id"] == ssl_finding["resourceId"]
    assert detail["certificate"]["id"] == ssl_finding["certificateId"]
    assert detail["certificate"]["primaryDomain"] == detail["details"]["domain"]
    plain = (await so.json(f"/findings/{volume['id']}"))["data"]
    assert plain["certificate"] is None and plain["resource"]["service"] == "ec2"
    so_world.remove(volume["id"])
    gone = await so.get(f"/findings/{volume['id']}")
    assert gone.status == 404 and gone.json()["error"] == "FINDING_NOT_FOUND"
    assert (await so.json("/findings"))["pagination"]["total"] == 1
    unknown = await so.get("/nope")
    assert unknown.status == 404 and unknown.json()["error"] == "NOT_FOUND"


async def test_mutations_and_reopen(so_world: ScanOrbitWorld) -> None:
    fid = so_world.add_finding()["id"]
    so_world.set_severity(fid, "high")
    so_world.snooze(fid)
    assert so_world.get(fid)["snoozedUntil"] is not None
    so_world.resolve(fid)
    assert so_world.get(fid)["snoozedUntil"] is None
    so_world.reopen(fid)
    finding = so_world.get(fid)
    assert finding["status"] == "open" and finding["resolvedAt"] is None
    assert finding["detectionCount"] == 2 and finding["severity"] == "high"
    assert so_world.scans_recent == []  # mutations do not record scans by themselves


async def test_scans_recent_active_and_stats(so: Client, so_world: ScanOrbitWorld) -> None:
    so_world.add_finding(severity="high")
    first = so_world.complete_scan(findings_new=1)
    second = so_world.complete_scan()
    running = so_world.start_scan()
    recent = (await so.json("/scans/recent"))["data"]
    assert [s["id"] for s in recent] == [second["id"], first["id"]]
    assert recent[0]["status"] == "complete" and recent[1]["findingsNew"] == 1
    assert [s["id"] for s in (await so.json("/scans/recent", limit=1))["data"]] == [second["id"]]
    assert (await so.get("/scans/recent", limit=101)).status == 400
    active = (await so.json("/scans/active"))["data"]
    assert [s["id"] for s in active] == [running["id"]] and active[0]["completedAt"] is None
    done = so_world.complete_scan(scan_id=running["id"], findings_resolved=2)
    assert done["id"] == running["id"]
    assert (await so.json("/scans/active"))["data"] == []
    stats = (await so.json("/findings/stats"))["data"]
    assert stats["totalFindings"] == 1 and stats["bySeverity"] == {"high": 1}
    org = (await so.json("/organization"))["data"]
    assert set(org) == {"id", "name", "slug", "tier"}
    assert (await so.json("/resources"))["pagination"]["total"] == len(so_world.resources)


async def test_auto_scan_records_a_scan_per_mutation() -> None:
    world = ScanOrbitWorld(api_keys={SO_KEY}, auto_scan=True)
    fid = world.add_finding()["id"]
    world.resolve(fid)
    assert [(s["findingsNew"], s["findingsResolved"]) for s in world.scans_recent] == [
        (1, 0), (0, 1)]


async def _serve(world: ScanOrbitWorld) -> RunningSim:
    return await RunningSim(make_scanorbit_app(world)).start()


@pytest.mark.parametrize("send_retry_after", [True, False])
async def test_org_rate_limit_shared_by_keys(
    session: aiohttp.ClientSession, clock: FakeClock, send_retry_after: bool
) -> None:
    world = ScanOrbitWorld(api_keys={SO_KEY, SO_KEY_2}, rate_limit=5, rate_window=60.0,
                           clock=clock, send_retry_after=send_retry_after)
    sim = await _serve(world)
    try:
        one, two = (Client(session, sim.url, {"X-API-Key": k}) for k in (SO_KEY, SO_KEY_2))
        for n in range(5):
            assert (await (one if n % 2 else two).get("/organization")).status == 200
        limited = await two.get("/organization")
        assert limited.status == 429
        assert limited.json()["error"] == "RATE_LIMIT_EXCEEDED"
        assert limited.headers.get("Retry-After") == ("60" if send_retry_after else None)
        assert (await one.get("/organization")).status == 429  # same org, same window
        assert world.stats.rate_limited == 2
        assert [(s.injected, s.path) for s in world.stats.served_429] == [
            (False, "/api/v1/organization")] * 2
        clock.advance(60.0)
        assert (await one.get("/organization")).status == 200
    finally:
        await sim.stop()


async def test_status_fault_with_retry_after(so: Client, so_world: ScanOrbitWorld) -> None:
    so_world.add_finding()
    so_world.faults.add(Fault("status", path="/findings$", status=503, retry_after="2",
                              code="SERVICE_UNAVAILABLE"))
    reply = await so.get("/findings")
    assert reply.status == 503 and reply.headers["Retry-After"] == "2"
    assert reply.json()["error"] == "SERVICE_UNAVAILABLE"
    assert (await so.get("/findings")).status == 200
    so_world.faults.add(Fault("status", status=429, retry_after="1"))
    assert (await so.get("/organization")).status == 429
    assert [s.injected for s in so_world.stats.served_429] == [True]
    assert so_world.stats.rate_limited == 0
    assert so_world.faults.fired_kinds() == ["status", "status"]


async def test_page_scoped_faults(so: Client, so_world: ScanOrbitWorld) -> None:
    for _ in range(30):
        so_world.add_finding()
    so_world.faults.add(Fault("status", path="/findings$", page=2, times=-1))
    assert (await so.get("/findings", page=1, limit=10)).status == 200
    assert (await so.get("/findings", page=2, limit=10)).status == 500
    assert (await so.get("/findings", page=2, limit=10)).status == 500
    assert (await so.get("/findings", page=3, limit=10)).status == 200
    so_world.faults.clear()
    assert (await so.get("/findings", page=2, limit=10)).status == 200


async def test_body_faults_over_http(so: Client, so_world: ScanOrbitWorld) -> None:
    for _ in range(3):
        so_world.add_finding()
    for kind in ("truncate", "invalid_json"):
        so_world.faults.add(Fault(kind))
        reply = await so.get("/findings")
        assert reply.status == 200
        with pytest.raises(ValueError):
            reply.json()
    so_world.faults.add(Fault("empty"))
    empty = await so.json("/findings")
    assert empty["data"] == [] and empty["pagination"]["total"] == 3
    so_world.faults.add(Fault("schema"))
    assert isinstance((await so.json("/findings"))["data"], dict)
    so_world.faults.add(Fault("schema", variant="missing_id"))
    assert "id" not in (await so.json("/findings"))["data"][0]
    so_world.faults.add(Fault("envelope_error", code="INTERNAL_ERROR"))
    reply = await so.get("/findings")
    assert reply.status == 200 and reply.json()["error"] == "INTERNAL_ERROR"
    assert len((await so.json("/findings"))["data"]) == 3


async def test_timeout_and_reset(so: Client, so_world: ScanOrbitWorld,
                                 session: aiohttp.ClientSession) -> None:
    so_world.faults.add(Fault("timeout", delay=3.0))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with session.get(so.base + "/organization", headers=so.headers,
                               timeout=aiohttp.ClientTimeout(total=0.2)):
            pass
    assert time.monotonic() - started < 1.0
    assert (await so.get("/organization")).status == 200
    # aiohttp retries an idempotent request once after a dropped connection, by design:
    # a single reset is absorbed, two in a row reach the caller.
    so_world.faults.add(Fault("reset"))
    assert (await so.get("/organization")).status == 200
    so_world.faults.add(Fault("reset", times=2))
    with pytest.raises(aiohttp.ClientConnectionError):
        await so.get("/organization")
    assert (await so.get("/organization")).status == 200
    assert so_world.faults.fired_kinds() == ["timeout", "reset", "reset", "reset"]


async def test_drift_shifts_later_pages(so: Client, so_world: ScanOrbitWorld) -> None:
    ids = [so_world.add_finding()["id"] for _ in range(20)][::-1]  # newest first
    so_world.faults.add(Fault("drift", path="/findings$", page=1, drift=2))
    page1 = [f["id"] for f in (await so.json("/findings", page=1, limit=10))["data"]]
    page2 = await so.json("/findings", page=2, limit=10)
    assert page1 == ids[:10]
    # Two newer findings pushed everything down: page 2 repeats the end of page 1.
    assert [f["id"] for f in page2["data"]][:2] == ids[8:10]
    assert page2["pagination"]["total"] == 22


async def test_bulk_world_serves_the_last_page(so: Client, so_world: ScanOrbitWorld) -> None:
    started = time.perf_counter()
    so_world.bulk_add(100_000)
    assert time.perf_counter() - started < 10.0
    newest = so_world.add_finding()
    first = await so.json("/findings", limit=100)
    assert first["data"][0]["id"] == newest["id"]
    assert first["pagination"] == {"page": 1, "limit": 100, "total": 100_001,
                                   "totalPages": 1001}
    last = await so.json("/findings", page=1001, limit=100)
    assert len(last["data"]) == 1
    assert last["data"][0]["createdAt"] <= first["data"][-1]["createdAt"]


async def test_random_step_changes_the_world_and_records_a_scan() -> None:
    import random

    world = ScanOrbitWorld(api_keys={SO_KEY}, seed=4)
    rng = random.Random(9)
    notes = [world.random_step(rng) for _ in range(30)]
    assert all(note.startswith("scanorbit ") for note in notes)
    assert len(world.scans_recent) == 30
    assert {f["status"] for f in world.findings.values()} >= {"open"}
