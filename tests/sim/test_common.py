"""The shared mechanism: rate-limit window, fault plan, body faults, timestamps, RunningSim."""

from __future__ import annotations

import json
import random
import ssl
import uuid
from datetime import UTC, datetime

import aiohttp
import pytest
import trustme

from bridge.sim import Fault, FaultPlan, RateLimitWindow, RunningSim, make_scanorbit_app
from bridge.sim.common import Timeline, iso, mangle_body, rand_uuid, retry_after_value
from bridge.sim.scanorbit import ScanOrbitWorld

from .conftest import SO_KEY, FakeClock


def test_window_admits_exactly_limit_then_reports_wait() -> None:
    clock = FakeClock()
    window = RateLimitWindow(3, 10.0, clock=clock)
    assert [window.hit("a") for _ in range(3)] == [None, None, None]
    clock.advance(4.0)
    assert window.hit("a") == pytest.approx(6.0)
    assert window.remaining("a") == 0
    assert window.hit("b") is None  # keys are independent
    clock.advance(6.0)
    assert window.hit("a") is None  # the first three left the window; rejects never counted
    assert window.remaining("a") == 2
    assert window.reset_in("a") == pytest.approx(10.0)


def test_window_is_sliding_not_fixed() -> None:
    clock = FakeClock()
    window = RateLimitWindow(2, 1.0, clock=clock)
    window.hit("k")
    clock.advance(0.9)
    window.hit("k")
    clock.advance(0.2)  # first hit expired, second still counts
    assert window.hit("k") is None
    assert window.hit("k") is not None


def test_window_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RateLimitWindow(0, 1.0)


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert retry_after_value(0.01) == "1"
    assert retry_after_value(1.2) == "2"
    assert retry_after_value(30.0) == "30"


def test_fault_plan_matches_by_path_and_page_and_counts() -> None:
    plan = FaultPlan()
    assert not plan
    plan.add(Fault("status", path="/findings$", page=2, times=2))
    assert plan.match("/api/v1/findings", 1) is None
    assert plan.match("/api/v1/findings/stats", 2) is None
    assert plan.match("/api/v1/findings", 2) is not None
    assert plan.match("/api/v1/findings", 2) is not None
    assert plan.match("/api/v1/findings", 2) is None
    assert not plan
    assert plan.fired == [("status", "/api/v1/findings")] * 2


def test_fault_plan_forever_until_cleared_and_in_order() -> None:
    plan = FaultPlan()
    first = plan.add(Fault("timeout", times=-1))
    plan.add(Fault("empty"))
    for _ in range(5):
        assert plan.match("/x", None) is first
    assert first.hits == 5
    plan.clear()
    assert plan.match("/x", 1) is None
    assert plan.fired_kinds() == ["timeout"] * 5


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Fault("status", times=0)
    with pytest.raises(Exception):  # noqa: B017 - re.error: a broken regex fails at once
        Fault("status", path="(")


PAGE = json.dumps({"data": [{"id": "a", "v": 1}, {"id": "b"}],
                   "pagination": {"page": 1, "limit": 2, "total": 9, "totalPages": 5}}).encode()


def test_body_faults() -> None:
    assert mangle_body(PAGE, Fault("truncate")) == PAGE[: len(PAGE) // 2]
    with pytest.raises(ValueError):
        json.loads(mangle_body(PAGE, Fault("invalid_json")))
    empty = json.loads(mangle_body(PAGE, Fault("empty")))
    assert empty == {"data": [], "pagination": {"page": 1, "limit": 2, "total": 9,
                                                "totalPages": 5}}
    wrong = json.loads(mangle_body(PAGE, Fault("schema")))
    assert isinstance(wrong["data"], dict)
    missing = json.loads(mangle_body(PAGE, Fault("schema", variant="missing_id")))
    assert missing["data"][0] == {"v": 1} and missing["data"][1] == {"id": "b"}


def test_body_faults_on_snapshots_and_top_level_lists() -> None:
    snapshot = json.dumps({"success": True, "data": {"users": [1], "sources": {"users": "ok"},
                                                     "connected": True}}).encode()
    assert json.loads(mangle_body(snapshot, Fault("empty")))["data"] == {
        "users": [], "sources": {"users": "ok"}, "connected": True}
    assert json.loads(mangle_body(snapshot, Fault("schema")))["data"]["users"] == {"items": [1]}
    recs = json.dumps({"recommendations": [{"id": "r"}]}).encode()
    assert json.loads(mangle_body(recs, Fault("empty"))) == {"recommendations": []}
    single = json.dumps({"data": {"id": "x", "n": 1}}).encode()
    assert json.loads(mangle_body(single, Fault("schema")))["data"] == [{"id": "x", "n": 1}]


def test_timeline_is_strictly_increasing_with_millisecond_iso() -> None:
    fixed = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    timeline = Timeline(lambda: fixed)
    stamps = [timeline.stamp() for _ in range(3)]
    assert stamps == ["2026-03-01T12:00:00.123Z", "2026-03-01T12:00:00.124Z",
                      "2026-03-01T12:00:00.125Z"]
    assert iso(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02T00:00:00.000Z"


def test_rand_uuid_is_a_reproducible_v4() -> None:
    a, b = random.Random(5), random.Random(5)
    values = [rand_uuid(a) for _ in range(50)]
    assert values == [rand_uuid(b) for _ in range(50)]
    assert all(uuid.UUID(v).version == 4 and uuid.UUID(v).variant == uuid.RFC_4122
               for v in values)


async def test_running_sim_serves_tls_and_stops() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    world = ScanOrbitWorld(api_keys={SO_KEY})
    sim = await RunningSim(make_scanorbit_app(world), ssl_context=server_ctx).start()
    try:
        assert sim.url.startswith("https://127.0.0.1:") and sim.url.endswith("/api/v1")
        assert sim.port != 0
        async with aiohttp.ClientSession() as session, session.get(
            sim.url + "/organization", headers={"X-API-Key": SO_KEY}, ssl=client_ctx
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["data"]["tier"] == "team"
    finally:
        await sim.stop()
    await sim.stop()  # idempotent
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(sim.url + "/organization")
