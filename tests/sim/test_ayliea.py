"""Ayliea simulator over real HTTP: scoped keys, offset paging, rate-limit headers, faults."""

from __future__ import annotations

import random
import time

import aiohttp

from bridge.sim import AylieaWorld, Fault, RunningSim, make_ayliea_app
from bridge.sim.ayliea import SCOPES, grade_for

from .conftest import AY_KEY, AY_KEY_SCORES, Client, FakeClock

REC_FIELDS = {"id", "title", "description", "priority", "status", "framework_id", "category",
              "created_at", "updated_at"}


async def _all_recommendations(ay: Client, limit: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    offset = 0
    while True:
        page = (await ay.json("/recommendations", limit=limit, offset=offset))["recommendations"]
        out += page
        if len(page) < limit:
            return out
        offset += limit


async def test_auth_and_scopes(ay: Client, ay_world: AylieaWorld) -> None:
    missing = await ay.get("/scores", headers={})
    assert missing.status == 401 and isinstance(missing.json()["error"], str)
    bad = await ay.get("/scores", headers={"X-API-Key": "ayliea_pk_fake_sim_nope"})
    assert bad.status == 401 and set(bad.json()) == {"error"}
    scores_only = {"X-API-Key": AY_KEY_SCORES}
    assert (await ay.get("/scores", headers=scores_only)).status == 200
    for path, scope in (("/recommendations", "recommendations:read"),
                        ("/discovery", "discovery:read")):
        denied = await ay.get(path, headers=scores_only)
        assert denied.status == 403
        assert denied.json() == {"error": f"API key missing required scope: {scope}"}
    ay_world.revoke(AY_KEY_SCORES)
    assert (await ay.get("/scores", headers=scores_only)).status == 401


async def test_offset_paging_ends_at_a_short_page(ay: Client, ay_world: AylieaWorld) -> None:
    for n in range(45):
        ay_world.add_recommendation(priority=n % 5 + 1)
    first = await ay.json("/recommendations")
    assert set(first) == {"recommendations"}  # no total: the list ends at a short page
    assert len(first["recommendations"]) == 20
    assert set(first["recommendations"][0]) == REC_FIELDS
    everything = await _all_recommendations(ay, limit=20)
    assert len(everything) == 45
    keys = [(r["priority"], r["id"]) for r in everything]
    assert keys == sorted(keys)
    assert (await ay.json("/recommendations", offset=45))["recommendations"] == []
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"offset": -1}):
        reply = await ay.get("/recommendations", **params)
        assert reply.status == 400 and set(reply.json()) == {"error"}, params


async def test_mutations_are_visible(ay: Client, ay_world: AylieaWorld) -> None:
    rec = ay_world.add_recommendation(priority=3)
    ay_world.set_status(rec["id"], "completed")
    ay_world.update_recommendation(rec["id"], priority=1)
    served = (await ay.json("/recommendations"))["recommendations"]
    assert served == [rec] and rec["status"] == "completed" and rec["priority"] == 1
    assert rec["updated_at"] > rec["created_at"]
    ay_world.remove_recommendation(rec["id"])
    assert (await ay.json("/recommendations"))["recommendations"] == []


async def test_scores_and_discovery(ay: Client, ay_world: AylieaWorld) -> None:
    ay_world.set_score("nist-ai-rmf", 64)
    ay_world.set_score("ai-security", 91, grade="A")
    scores = (await ay.json("/scores"))["scores"]
    assert [s["framework_id"] for s in scores] == ["ai-security", "nist-ai-rmf"]
    assert scores[1] == {"framework_id": "nist-ai-rmf", "overall_score": 64, "grade": "D",
                         "completed_at": scores[1]["completed_at"]}
    assert [grade_for(s) for s in (95, 85, 75, 65, 10)] == ["A", "B", "C", "D", "F"]
    empty = await ay.json("/discovery")
    assert empty == {"platforms": [], "scanned_at": None}
    platform = ay_world.add_platform("Claude", confidence=0.9)
    body = await ay.json("/discovery")
    assert body["platforms"] == [platform] and body["scanned_at"] == platform["detected_at"]
    assert set(platform) == {"id", "name", "vendor", "confidence", "detected_at", "evidence"}
    assert platform["vendor"] == "Anthropic"
    ay_world.remove_platform(platform["id"])
    assert (await ay.json("/discovery"))["platforms"] == []


async def test_rate_limit_headers_and_429(session: aiohttp.ClientSession,
                                          clock: FakeClock) -> None:
    world = AylieaWorld(keys={AY_KEY: SCOPES, AY_KEY_SCORES: {"scores:read"}},
                        rate_limit=4, rate_window=30.0, clock=clock)
    async with RunningSim(make_ayliea_app(world)) as sim:
        ay = Client(session, sim.url, {"X-API-Key": AY_KEY})
        remaining = []
        for _ in range(4):
            reply = await ay.get("/scores")
            assert reply.status == 200 and reply.headers["X-RateLimit-Limit"] == "4"
            remaining.append(reply.headers["X-RateLimit-Remaining"])
        assert remaining == ["3", "2", "1", "0"]
        limited = await ay.get("/scores")
        assert limited.status == 429 and limited.headers["Retry-After"] == "30"
        assert set(limited.json()) == {"error"}
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert abs(int(limited.headers["X-RateLimit-Reset"]) - (time.time() + 30)) <= 2
        other = await ay.get("/scores", headers={"X-API-Key": AY_KEY_SCORES})
        assert other.status == 200  # per key
        clock.advance(30.0)
        assert (await ay.get("/scores")).status == 200
        assert world.stats.rate_limited == 1


async def test_faults_use_offset_pages(ay: Client, ay_world: AylieaWorld) -> None:
    for _ in range(30):
        ay_world.add_recommendation()
    ay_world.faults.add(Fault("status", path="/recommendations$", page=2, status=503))
    assert (await ay.get("/recommendations", limit=10, offset=0)).status == 200
    failed = await ay.get("/recommendations", limit=10, offset=10)
    assert failed.status == 503 and set(failed.json()) == {"error"}
    assert "X-RateLimit-Limit" in failed.headers
    ay_world.faults.add(Fault("empty", page=3))
    assert (await ay.json("/recommendations", limit=10, offset=20))["recommendations"] == []
    ay_world.faults.add(Fault("schema"))
    assert isinstance((await ay.json("/recommendations"))["recommendations"], dict)


async def test_drift_inserts_at_the_head(ay: Client, ay_world: AylieaWorld) -> None:
    rng = random.Random(4)
    for _ in range(25):
        ay_world.add_recommendation(priority=rng.randint(1, 5))
    before = [r["id"] for r in await _all_recommendations(ay, limit=100)]
    ay_world.faults.add(Fault("drift", path="/recommendations$", page=1, drift=2))
    page1 = [r["id"] for r in (await ay.json("/recommendations", limit=10))["recommendations"]]
    page2 = [r["id"] for r in
             (await ay.json("/recommendations", limit=10, offset=10))["recommendations"]]
    assert page1 == before[:10]
    assert page2[:2] == before[8:10]  # shifted by the two inserted ahead of the offset
    after = [r["id"] for r in await _all_recommendations(ay, limit=100)]
    assert len(after) == 27 and after[2:] == before


def test_random_step() -> None:
    world = AylieaWorld(keys={AY_KEY: SCOPES}, seed=8)
    world.set_score("ai-security", 70)
    rng = random.Random(2)
    notes = [world.random_step(rng) for _ in range(40)]
    assert all(n.startswith("ayliea ") for n in notes)
    assert world.recommendations and world.platforms
    assert any("score" in n for n in notes) and any("->" in n for n in notes)
