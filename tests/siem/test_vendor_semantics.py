"""Vendor semantics the sources must not blur (issue 21): Aether365 scan types and the score,
Ayliea's X-RateLimit-* headers. Against the simulators over real HTTP."""

from __future__ import annotations

from pathlib import Path

from bridge.config import parse_config
from bridge.model import Event
from bridge.sim.aether365 import Aether365World
from bridge.sim.ayliea import SCOPES, AylieaWorld, make_app
from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld
from tests.conftest import (
    SIM_AYLIEA_KEY,
    aether365_source,
    avoidable_429s,
    ayliea_source,
    base_config,
    scanorbit_source,
)
from tests.support.harness import Harness

T = "tenant-contoso"


async def test_alternating_compliance_and_exposure_scans_do_not_churn(
        tmp_path: Path, aether365: tuple[Aether365World, RunningSim]) -> None:
    """An exposure scan runs other tests; were it compared with the compliance scan, every
    compliance failure would resolve and reopen at each alternation. The default compares
    only compliance scans."""
    world, sim = aether365
    for test in ("C.1", "C.2"):
        world.set_test(T, test, "failed")
    world.set_test(T, "X.1", "failed")
    world.run_scan(T, only=("C.1", "C.2"))
    cfg = parse_config(base_config(tmp_path, [aether365_source(
        sim.url, policies=False, threats=False, scores=False)]))
    async with Harness(cfg) as h:
        first = await h.sweep()
        assert sorted(e.key for e in first.events) == ["C.1", "C.2"]
        seen: list[Event] = []
        for _ in range(3):
            world.run_scan(T, scan_type="exposure", only=("X.1",))
            seen += (await h.sweep()).events
            world.run_scan(T, only=("C.1", "C.2"))
            seen += (await h.sweep()).events
        assert seen == []
        world.set_test(T, "C.1", "passed")
        world.run_scan(T, scan_type="exposure", only=("X.1",))
        assert (await h.sweep()).events == ()  # an exposure scan says nothing about C.1
        world.run_scan(T, only=("C.1", "C.2"))
        fixed = await h.sweep()
    assert [(e.type.value, e.key) for e in fixed.events] == [("resolved", "C.1")]


async def test_aether365_score_changes_on_a_drop_by_the_threshold_or_crossing_the_floor(
        tmp_path: Path, aether365: tuple[Aether365World, RunningSim]) -> None:
    world, sim = aether365
    world.populate(T, tests=4, failing=0)
    cfg = parse_config(base_config(tmp_path, [aether365_source(
        sim.url, policies=False, threats=False, score_drop_threshold=5, score_floor=80)]))

    async def scored(score: float) -> list[tuple[str, object, object]]:
        world.run_scan(T)["score"] = score
        world.touch()
        result = await h.sweep()
        return [(e.type.value, e.attributes["score"], e.changes.get("attributes.score"))
                for e in result.events if e.kind == "score"]

    async with Harness(cfg) as h:
        assert await scored(90) == [("new", 90, None)]
        assert await scored(88) == []  # a wobble
        assert await scored(85) == [("changed", 85, (90, 85))]  # 5 points since the report
        assert await scored(95) == []  # a rise raises the baseline quietly
        assert await scored(91) == []
        assert await scored(79) == [("changed", 79, (95, 79))]  # and below the floor
        (item,) = [i for i in await h.store.list_items(scope="aether365/contoso")
                   if i.kind == "score"]
        assert item.key == "compliance"


async def test_x_ratelimit_headers_pace_requests_below_the_limit(tmp_path: Path) -> None:
    """A client configured far above the vendor's limit still never collects a 429 where the
    vendor says how many requests are left and when the window resets."""
    world = AylieaWorld(keys={SIM_AYLIEA_KEY: SCOPES}, seed=3, rate_limit=3, rate_window=1.0)
    for _ in range(6):
        world.add_recommendation()
    world.set_score("ai-security", 70)
    async with RunningSim(make_app(world)) as sim:
        cfg = parse_config(base_config(tmp_path, [ayliea_source(
            sim.url, page_size=2, page_overlap=0,
            http={"rate_limit_per_minute": 60_000, "burst": 100, "max_retries": 0})]))
        async with Harness(cfg) as h:
            result = await h.sweep()
    assert result.record.outcome == "complete"
    assert result.record.requests >= 5  # scores and four pages: more than one window's worth
    assert avoidable_429s(world) == []
    assert len([e for e in result.events if e.kind == "recommendation"]) == 6


# -- freshness from the rate budget -----------------------------------------------------------

async def test_a_small_estate_sees_a_snooze_made_in_the_ui_within_one_interval(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim]) -> None:
    """No scan ran, so the probe sees nothing new; a full read costs 3 of the 50 requests one
    interval allows (5 %, under the default share of 10 %): it is re-read anyway."""
    world, sim = scanorbit
    ids = [world.add_finding()["id"] for _ in range(3)]
    world.complete_scan()
    cfg = parse_config(base_config(tmp_path, [scanorbit_source(
        sim.url, interval=60, full_resweep_interval=3600,
        http={"rate_limit_per_minute": 50, "burst": 50})]))
    async with Harness(cfg) as h:
        assert len((await h.sweep()).events) == 3
        world.snooze(ids[0])  # in the vendor's UI: no scan
        seen = await h.sweep()
    assert seen.record.outcome == "complete"
    assert [(e.type.value, e.key) for e in seen.events] == [("resolved", ids[0])]


async def test_a_large_estate_waits_for_the_bound_and_says_what_it_did_not_read(
        tmp_path: Path, ayliea: tuple[AylieaWorld, RunningSim]) -> None:
    """Here a full read costs 4 of the 50 requests an interval allows, over a 5 % share: the
    idle sweep reads the scores only, and its record says the recommendations were not read."""
    world, sim = ayliea
    world.set_score("ai-security", 70)
    rec = world.add_recommendation()["id"]
    for _ in range(5):
        world.add_recommendation()
    cfg = parse_config(base_config(tmp_path, [ayliea_source(
        sim.url, interval=60, full_resweep_interval=3600, resweep_budget_share=0.05,
        page_size=2, page_overlap=0, http={"rate_limit_per_minute": 50, "burst": 50})]))
    async with Harness(cfg) as h:
        await h.sweep()
        world.set_status(rec, "completed")
        idle = await h.sweep()
    assert idle.record.requests == 1 and idle.events == ()
    assert any("recommendations: not re-read" in n for n in idle.record.notes)
