"""Ayliea → diff → SQLite over real HTTP: recommendations paged by offset, scores that only
report meaningful drops, optional and tolerant discovery, scoped keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from bridge.config import BridgeConfig, parse_config
from bridge.sim.ayliea import AylieaWorld
from bridge.sim.common import RunningSim
from bridge.sim.faults import Fault
from bridge.sweep import SweepResult
from tests.conftest import SIM_AYLIEA_KEY, ayliea_source, base_config
from tests.support.harness import Harness

Sim = tuple[AylieaWorld, RunningSim]
ONLY_RECS: dict[str, Any] = {"scores": False}
ONLY_SCORES: dict[str, Any] = {"recommendations": False}


def config(tmp_path: Path, url: str, **source: Any) -> BridgeConfig:
    return parse_config(base_config(tmp_path, [ayliea_source(url, **source)]))


def seen(result: SweepResult) -> list[tuple[str, str, str]]:
    return sorted((e.type.value, e.kind, e.key) for e in result.events)


# -- recommendations ------------------------------------------------------------------------

async def test_recommendations_page_by_offset_until_a_short_page(
    tmp_path: Path, ayliea: Sim
) -> None:
    world, sim = ayliea
    ids = {world.add_recommendation()["id"] for _ in range(250)}
    async with Harness(config(tmp_path, sim.url, **ONLY_RECS)) as h:
        result = await h.sweep()
    assert result.record.outcome == "complete"
    # Offsets 0, 99, 198: each page repeats the previous page's last row.
    assert result.record.requests == 3
    assert {e.key for e in result.events} == ids
    assert world.stats.requests_by_path["/api/v1/recommendations"] == 3


@pytest.mark.parametrize(("count", "requests"), [(0, 1), (99, 1), (100, 2), (199, 3)])
async def test_page_count_at_the_edges(
    count: int, requests: int, tmp_path: Path, ayliea: Sim
) -> None:
    world, sim = ayliea
    for _ in range(count):
        world.add_recommendation()
    async with Harness(config(tmp_path, sim.url, **ONLY_RECS)) as h:
        result = await h.sweep()
    assert result.record.requests == requests and len(result.events) == count


async def test_recommendation_new_changed_resolved_reopened(tmp_path: Path, ayliea: Sim) -> None:
    world, sim = ayliea
    rec = world.add_recommendation(priority=3, title="Block unsanctioned AI tools")["id"]
    other = world.add_recommendation(priority=2)["id"]
    async with Harness(config(tmp_path, sim.url, **ONLY_RECS)) as h:
        first = await h.sweep()
        event = next(e for e in first.events if e.key == rec)
        assert (event.type.value, event.kind, event.severity) == ("new", "recommendation", "medium")
        assert event.vendor_severity == "priority 3" and event.attributes["priority"] == 3
        world.update_recommendation(rec, priority=1, status="in_progress")
        changed = await h.sweep()
        assert seen(changed) == [("changed", "recommendation", rec)]
        assert changed.events[0].changes == {"severity": ("medium", "critical"),
                                             "vendor_severity": ("priority 3", "priority 1"),
                                             "status": ("open", "in_progress")}
        world.set_status(rec, "completed")
        resolved = await h.sweep()
        assert seen(resolved) == [("resolved", "recommendation", rec)]
        assert resolved.events[0].reason == "recommendation completed"
        world.set_status(rec, "open")
        assert seen(await h.sweep()) == [("reopened", "recommendation", rec)]
        world.set_status(rec, "dismissed")
        world.remove_recommendation(other)
        assert seen(await h.sweep()) == [("resolved", "recommendation", rec)]
        assert seen(await h.sweep()) == [("resolved", "recommendation", other)]


async def test_priority_table_is_configurable(tmp_path: Path, ayliea: Sim) -> None:
    world, sim = ayliea
    for priority in (1, 2, 7):
        world.add_recommendation(id=f"p{priority}", priority=priority)
    table = {"priority_severity": {1: "high", 2: "high"}, "unknown_priority_severity": "info"}
    async with Harness(config(tmp_path, sim.url, **ONLY_RECS, **table)) as h:
        result = await h.sweep()
    assert {e.key: e.severity for e in result.events} == {"p1": "high", "p2": "high",
                                                          "p7": "info"}


async def test_a_list_shifting_mid_walk_is_walked_again(tmp_path: Path, ayliea: Sim) -> None:
    world, sim = ayliea
    for _ in range(250):
        world.add_recommendation()
    world.faults.add(Fault(kind="drift", path="/recommendations$", page=1, drift=2))
    async with Harness(config(tmp_path, sim.url, **ONLY_RECS)) as h:
        result = await h.sweep()
    assert result.record.outcome == "complete" and result.record.notes == ()
    assert len(result.events) == 252  # the two inserted mid-walk are found by the second walk


@pytest.mark.parametrize("broken", [{"status": ["open"]}, {"id": ""}],
                         ids=["bad-status", "no-id"])
async def test_an_unreadable_row_on_the_page_overlap_keeps_its_place(
    broken: dict[str, Any], tmp_path: Path, ayliea: Sim
) -> None:
    """Row 99 ends page 1 and starts page 2 (pages overlap by one row). Unreadable, it is
    skipped alone: keyed by its id, or by its position when it has none, it still matches
    across the overlap, so the walk neither stops early nor mistakes it for drift."""
    world, sim = ayliea
    for _ in range(99):
        world.add_recommendation(priority=1)
    bad = world.add_recommendation(priority=2, **broken)
    for _ in range(150):
        world.add_recommendation(priority=3)
    assert world.ordered()[99] is bad
    async with Harness(config(tmp_path, sim.url, **ONLY_RECS)) as h:
        with capture_logs() as logs:
            result = await h.sweep()
    key = bad["id"] or "<row 99>"
    assert result.record.outcome == "incomplete"
    assert result.record.requests == 3  # no early stop, no drift retry
    assert len(result.record.notes) == 1 and "drift" not in result.record.notes[0]
    assert f"{key}: recommendations." in result.record.notes[0]
    assert len(result.events) == 249 and key not in {e.key for e in result.events}
    # Once per page it was served on (it ends page 1 and starts page 2), one line each.
    assert [e["ids"] for e in logs if e["event"] == "vendor_items_skipped"] == [[key], [key]]


async def test_idle_cycles_cost_one_request_until_a_new_assessment(
    tmp_path: Path, ayliea: Sim
) -> None:
    world, sim = ayliea
    world.set_score("ai-security", 70)
    rec = world.add_recommendation()["id"]
    for _ in range(300):
        world.add_recommendation()
    async with Harness(config(tmp_path, sim.url, full_resweep_interval=3600,
                              resweep_budget_share=0)) as h:
        assert (await h.sweep()).record.requests == 1 + 4
        world.set_status(rec, "completed")  # by a person: seen at the next full re-sweep
        idle = await h.sweep()
        assert idle.record.requests == 1 and idle.events == ()
        world.set_score("ai-security", 71)  # a new assessment
        after = await h.sweep()
    assert after.record.requests == 1 + 4
    assert seen(after) == [("resolved", "recommendation", rec)]


# -- scores ---------------------------------------------------------------------------------

async def test_score_drops_beyond_threshold_and_grade_changes_are_changes(
    tmp_path: Path, ayliea: Sim
) -> None:
    world, sim = ayliea
    world.set_score("ai-security", 78)
    world.set_score("iso-42001", 90)
    async with Harness(config(tmp_path, sim.url, **ONLY_SCORES)) as h:
        first = await h.sweep()
        assert seen(first) == [("new", "score", "ai-security"), ("new", "score", "iso-42001")]
        assert next(e for e in first.events if e.key == "ai-security").severity == "medium"

        async def step(framework: str, score: float) -> list[dict[str, Any]]:
            world.set_score(framework, score)
            result = await h.sweep()
            return [dict(e.changes) for e in result.events]

        assert await step("ai-security", 79) == []          # a rise: no event
        assert await step("ai-security", 76) == []          # 3 below the baseline of 79
        assert await step("ai-security", 74) == [            # 5 below 79: reported
            {"attributes.overall_score": (79, 74)}]
        assert await step("ai-security", 69) == [            # a drop and a grade change
            {"attributes.grade": ("C", "D"), "attributes.overall_score": (74, 69)}]
        assert await step("ai-security", 70) == [            # a rise, but the grade changed
            {"attributes.grade": ("D", "C"), "attributes.overall_score": (69, 70)}]
        assert await step("iso-42001", 98.5) == []          # a rise (same grade)
        assert await step("iso-42001", 94) == []            # 4.5 below 98.5
        assert await step("iso-42001", 93.5) == [            # fractional scores add up too
            {"attributes.overall_score": (98.5, 93.5)}]


async def test_a_framework_no_longer_scored_resolves_and_comes_back(
    tmp_path: Path, ayliea: Sim
) -> None:
    world, sim = ayliea
    world.set_score("ai-security", 70)
    world.set_score("eu-ai-act", 55)
    async with Harness(config(tmp_path, sim.url, **ONLY_SCORES)) as h:
        await h.sweep()
        world.remove_score("eu-ai-act")
        assert (await h.sweep()).events == ()
        resolved = await h.sweep()
        assert seen(resolved) == [("resolved", "score", "eu-ai-act")]
        world.set_score("eu-ai-act", 58)
        reopened = await h.sweep()
    assert seen(reopened) == [("reopened", "score", "eu-ai-act")]
    assert reopened.events[0].attributes["overall_score"] == 58


async def test_score_threshold_is_configurable(tmp_path: Path, ayliea: Sim) -> None:
    world, sim = ayliea
    world.set_score("ai-security", 75)
    async with Harness(config(tmp_path, sim.url, score_drop_threshold=1, **ONLY_SCORES)) as h:
        await h.sweep()
        world.set_score("ai-security", 74)
        changed = await h.sweep()
    assert changed.events[0].changes == {"attributes.overall_score": (75, 74)}
    assert changed.events[0].title == "ai-security score 74 (grade C)"


# -- discovery ------------------------------------------------------------------------------

async def test_discovery_is_off_by_default(tmp_path: Path, ayliea: Sim) -> None:
    world, sim = ayliea
    world.add_platform("ChatGPT")
    world.set_score("ai-security", 70)
    async with Harness(config(tmp_path, sim.url)) as h:
        result = await h.sweep()
    assert {e.kind for e in result.events} == {"score"}
    assert world.stats.requests_by_path["/api/v1/discovery"] == 0


async def test_discovery_cycle(tmp_path: Path, ayliea: Sim) -> None:
    world, sim = ayliea
    gpt = world.add_platform("ChatGPT", platform_id="gpt")["id"]
    world.add_platform("Claude", platform_id="claude")
    on = {"discovery": True, "recommendations": False, "scores": False}
    async with Harness(config(tmp_path, sim.url, **on)) as h:
        first = await h.sweep()
        assert seen(first) == [("new", "discovery", "claude"), ("new", "discovery", "gpt")]
        event = next(e for e in first.events if e.key == gpt)
        assert event.title == "AI platform detected: ChatGPT (OpenAI)"
        assert isinstance(event.attributes["confidence"], float)
        world.update_platform(gpt, vendor="OpenAI, Inc.")
        changed = await h.sweep()
        assert seen(changed) == [("changed", "discovery", gpt)]
        assert changed.events[0].changes == {"title": ("AI platform detected: ChatGPT (OpenAI)",
                                                       "AI platform detected: ChatGPT (OpenAI, "
                                                       "Inc.)")}
        world.remove_platform(gpt)
        assert (await h.sweep()).events == ()
        assert seen(await h.sweep()) == [("resolved", "discovery", gpt)]
        world.add_platform("ChatGPT", platform_id="gpt")
        assert seen(await h.sweep()) == [("reopened", "discovery", gpt)]


@pytest.fixture
async def odd_discovery() -> AsyncIterator[tuple[list[Any], str]]:
    """A vendor whose discovery answer has whatever shape the test puts in `bodies[0]`."""
    bodies: list[Any] = [None]

    async def discovery(request: web.Request) -> web.Response:
        return web.json_response(bodies[0])

    app = web.Application()
    app.router.add_get("/api/v1/discovery", discovery)
    async with RunningSim(app) as sim:
        yield bodies, sim.root + "/api/v1"


@pytest.mark.parametrize(("body", "keys", "complete"), [
    ({"platforms": [{"id": "a", "name": "A"}]}, {"a"}, True),
    ([{"platform_id": "b", "name": "B"}], {"b"}, True),
    ({"data": [{"id": "c", "name": "C"}], "scanned_at": None}, {"c"}, True),
    ({"data": {"platforms": [{"name": "C", "confidence": "high"}]}}, {"C"}, False),
    ({"results": [{"id": 7, "name": "D", "evidence": ["x"]}]}, {"7"}, False),
    ({"platforms": [{"id": "a"}, {"confidence": 0.9}, "junk"]}, {"a"}, False),
    ({"unexpected": {"shape": True}}, set(), False),
    ("just text", set(), False),
])
async def test_discovery_tolerates_unknown_shapes(
    body: Any, keys: set[str], complete: bool, tmp_path: Path,
    odd_discovery: tuple[list[Any], str],
) -> None:
    bodies, url = odd_discovery
    bodies[0] = body
    on = {"discovery": True, "recommendations": False, "scores": False}
    async with Harness(config(tmp_path, url, **on)) as h:
        result = await h.sweep()
    assert {e.key for e in result.events} == keys
    assert result.record.outcome == ("complete" if complete else "incomplete")


# -- keys and errors ------------------------------------------------------------------------

async def test_missing_scope_is_named_and_other_parts_still_run(
    tmp_path: Path, ayliea: Sim
) -> None:
    world, sim = ayliea
    world.add_key(SIM_AYLIEA_KEY, scopes=["scores:read"])
    world.set_score("ai-security", 70)
    world.add_recommendation()
    async with Harness(config(tmp_path, sim.url)) as h:
        with capture_logs() as logs:
            results = [await h.sweep() for _ in range(2)]
    for result in results:
        assert result.record.outcome == "incomplete"
        assert "API key lacks scope recommendations:read" in result.record.notes[0]
    assert seen(results[0]) == [("new", "score", "ai-security")]
    conditions = [e for e in logs if e["event"] == "source_condition"]
    assert [c["subject"] for c in conditions] == ["recommendations:read"]


async def test_revoked_key_fails_then_recovers(tmp_path: Path, ayliea: Sim) -> None:
    world, sim = ayliea
    world.set_score("ai-security", 70)
    async with Harness(config(tmp_path, sim.url)) as h:
        world.revoke(SIM_AYLIEA_KEY)
        failed = await h.sweep()
        assert failed.record.outcome == "failed" and failed.record.requests == 1
        assert "401" in (failed.record.error or "")
        assert SIM_AYLIEA_KEY not in (failed.record.error or "")
        world.add_key(SIM_AYLIEA_KEY)
        assert seen(await h.sweep()) == [("new", "score", "ai-security")]


async def test_error_body_with_200_is_an_error(tmp_path: Path, ayliea: Sim) -> None:
    world, sim = ayliea
    world.set_score("ai-security", 70)
    world.faults.add(Fault(kind="envelope_error", path="/scores$", times=-1))
    async with Harness(config(tmp_path, sim.url, **ONLY_SCORES)) as h:
        result = await h.sweep()
    assert result.record.outcome == "incomplete"
    assert "Simulated error in a 200 body" in result.record.notes[0]
