"""No faulty or incomplete answer ever resolves anything: every fault kind for every source kind.

Each case sets up a world, sweeps it once, then makes upstream changes that a *good* answer
would turn into resolutions (some items resolved by the vendor, some gone). With the fault in
place, two sweeps must resolve nothing and count no misses. Once the fault is cleared, the
first sweep resolves exactly the vendor's resolutions and the second exactly the vanished
items (absence needs two complete sweeps): proof that the case would have resolved, and that
the faulty sweeps did not count as misses.

ScanOrbit's own table lives in tests/integration/test_scanorbit_flow.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_config
from bridge.model import EventType
from bridge.sim.aether365 import Aether365World
from bridge.sim.ayliea import AylieaWorld
from bridge.sim.common import RunningSim, SimWorld
from bridge.sim.faults import FAULT_KINDS, Fault
from bridge.sweep import SweepResult
from tests.conftest import aether365_source, ayliea_source, base_config
from tests.support.harness import Harness

T = "tenant-contoso"
HTTP = {"rate_limit_per_minute": 60_000, "backoff_initial": 0.01, "backoff_max": 0.02,
        "max_retries": 1, "timeout": 0.3}
World = Any  # Aether365World | AylieaWorld; each case knows which


@dataclass(frozen=True)
class Case:
    """One source kind: how to build its world and what a good answer would resolve."""

    name: str
    vendor: str  # "aether365" | "ayliea"
    source: dict[str, Any]
    path: str  # the endpoint the fault hits
    page: int | None
    setup: Callable[[World], None]
    # Upstream changes; returns (resolved by the vendor, vanished) keys.
    change: Callable[[World], tuple[set[str], set[str]]]
    # Between the two healed sweeps (a new scan, for scan-gated results).
    advance: Callable[[World], None] = lambda world: None
    # Drift must hit a page that has pages after it (default: `page`).
    drift_page: int | None = None
    # Fault ids that make the kind drop out of the sweep rather than be incomplete.
    omitted_on: frozenset[str] = frozenset()
    # Fault ids that cannot apply here, and why.
    not_applicable: dict[str, str] = field(default_factory=dict)


FAULTS: dict[str, Fault] = {
    "status-500": Fault(kind="status", status=500, times=-1),
    "status-429": Fault(kind="status", status=429, retry_after="0", code="RATE_LIMITED",
                        times=-1),
    "timeout": Fault(kind="timeout", delay=1.0, times=-1),
    "truncate": Fault(kind="truncate", times=-1),
    "invalid_json": Fault(kind="invalid_json", times=-1),
    "reset": Fault(kind="reset", times=-1),
    "envelope_error": Fault(kind="envelope_error", code="INTERNAL_ERROR", times=-1),
    "drift": Fault(kind="drift", drift=2, times=-1),
    "empty": Fault(kind="empty", times=-1),
    "schema": Fault(kind="schema", times=-1),
    "schema-missing_id": Fault(kind="schema", variant="missing_id", times=-1),
}
SNAPSHOT_DRIFT = ("a single-request snapshot cannot shift between pages; the simulator's drift "
                  "only changes other lists afterwards")


# -- Aether365 ------------------------------------------------------------------------------

def _tests_setup(world: Aether365World) -> None:
    for n in range(120):
        world.set_test(T, f"T{n:03d}", "failed")
    world.run_scan(T)


def _tests_change(world: Aether365World) -> tuple[set[str], set[str]]:
    passed = {f"T{n:03d}" for n in range(5)}  # on page 1
    gone = {f"T{n:03d}" for n in range(110, 115)}
    for test_id in passed:
        world.set_test(T, test_id, "passed")
    for test_id in gone:
        world.remove_test(T, test_id)
    world.run_scan(T)
    return passed, gone


def _threats_setup(world: Aether365World) -> None:
    for n in range(3):
        world.add_risky_user(T, user_id=f"u{n}")
        world.add_risk_detection(T, detection_id=f"d{n}")
        world.add_alert(T, alert_id=f"a{n}")


def _threats_change(world: Aether365World) -> tuple[set[str], set[str]]:
    world.update_risky_user(T, "u0", riskState="remediated")
    world.update_threat(T, "riskDetections", "d0", riskState="dismissed")
    world.update_alert(T, "a0", status="resolved")
    world.remove_risky_user(T, "u1")
    world.remove_risk_detection(T, "d1")
    world.remove_alert(T, "a1")
    return {"u0", "d0", "a0"}, {"u1", "d1", "a1"}


def _policies_setup(world: Aether365World) -> None:
    world.default_policies(T, compliant=0)


def _policies_change(world: Aether365World) -> tuple[set[str], set[str]]:
    world.set_policy(T, "securityDefaults", current=True)
    world.remove_policy(T, "externalSharing")
    world.touch()
    return {"securityDefaults"}, {"externalSharing"}


def _rescan(world: Aether365World) -> None:
    world.run_scan(T)


# -- Ayliea ---------------------------------------------------------------------------------

def _recs_setup(world: AylieaWorld) -> None:
    for _ in range(250):
        world.add_recommendation()


def _recs_change(world: AylieaWorld) -> tuple[set[str], set[str]]:
    ordered = world.ordered()
    done = {r["id"] for r in ordered[:5]}
    gone = {r["id"] for r in ordered[-5:]}
    for rec_id in done:
        world.set_status(rec_id, "completed")
    for rec_id in gone:
        world.remove_recommendation(rec_id)
    return done, gone


def _scores_setup(world: AylieaWorld) -> None:
    for framework, score in (("ai-security", 72), ("nist-ai-rmf", 64), ("iso-42001", 85)):
        world.set_score(framework, score)


def _scores_change(world: AylieaWorld) -> tuple[set[str], set[str]]:
    world.remove_score("iso-42001")
    return set(), {"iso-42001"}


def _platforms_setup(world: AylieaWorld) -> None:
    for n, name in enumerate(("ChatGPT", "Claude", "Gemini")):
        world.add_platform(name, platform_id=f"p{n}")


def _platforms_change(world: AylieaWorld) -> tuple[set[str], set[str]]:
    world.remove_platform("p1")
    return set(), {"p1"}


ONLY: dict[str, Any] = {"compliance": False, "threats": False, "policies": False}
CASES = [
    Case("aether365/test_result (result pages)", "aether365",
         {**ONLY, "compliance": True, "page_size": 50}, "/results$", 2,
         _tests_setup, _tests_change, _rescan),
    Case("aether365/test_result (scan probe)", "aether365",
         {**ONLY, "compliance": True, "page_size": 50}, "/tenants/me/scans$", None,
         _tests_setup, _tests_change, _rescan,
         omitted_on=frozenset({"empty"}),  # no completed scan listed: nothing is swept
         not_applicable={"drift": "the probe reads one row; drift only adds newer scans, "
                                  "which the next cycle sweeps"}),
    Case("aether365/risky_user+risk_detection+security_alert", "aether365",
         {**ONLY, "threats": True}, "/tenants/me/threats$", None,
         _threats_setup, _threats_change, omitted_on=frozenset({"empty"}),
         not_applicable={"drift": SNAPSHOT_DRIFT}),
    Case("aether365/policy", "aether365", {**ONLY, "policies": True}, "/tenants/me/policies$",
         None, _policies_setup, _policies_change,
         not_applicable={"drift": SNAPSHOT_DRIFT,
                         "schema-missing_id": "policy rows are keyed by `key` and have no `id` "
                                              "to drop; `schema` covers a broken shape"}),
    Case("ayliea/recommendation", "ayliea", {"scores": False}, "/recommendations$", 2,
         _recs_setup, _recs_change, drift_page=1),
    Case("ayliea/score", "ayliea", {"recommendations": False}, "/scores$", None,
         _scores_setup, _scores_change, omitted_on=frozenset({"empty"}),
         not_applicable={"drift": SNAPSHOT_DRIFT,
                         "schema-missing_id": "score rows are keyed by `framework_id` and have "
                                              "no `id` to drop; `schema` covers a broken shape"}),
    Case("ayliea/discovery", "ayliea",
         {"recommendations": False, "scores": False, "discovery": True}, "/discovery$", None,
         _platforms_setup, _platforms_change, omitted_on=frozenset({"empty"}),
         not_applicable={"drift": SNAPSHOT_DRIFT}),
]


def _table() -> Iterator[Any]:
    for case in CASES:
        for fault_id, fault in FAULTS.items():
            if fault_id in case.not_applicable:
                continue
            yield pytest.param(case, fault_id, fault, id=f"{case.name}-{fault_id}")


def test_the_table_covers_every_fault_kind_for_every_case() -> None:
    assert {f.kind for f in FAULTS.values()} == set(FAULT_KINDS)
    for case in CASES:
        assert set(case.not_applicable) <= set(FAULTS), case.name


def _resolved(results: list[SweepResult]) -> set[str]:
    return {e.key for r in results for e in r.events if e.type is EventType.RESOLVED}


@pytest.mark.parametrize(("case", "fault_id", "fault"), list(_table()))
async def test_faulty_answers_never_resolve(
    case: Case, fault_id: str, fault: Fault, tmp_path: Path,
    aether365: tuple[Aether365World, RunningSim], ayliea: tuple[AylieaWorld, RunningSim],
) -> None:
    world: SimWorld
    world, sim = aether365 if case.vendor == "aether365" else ayliea
    build = aether365_source if case.vendor == "aether365" else ayliea_source
    cfg = parse_config(base_config(tmp_path, [build(sim.url, **case.source, http=HTTP)]))
    case.setup(world)
    async with Harness(cfg) as h:
        baseline = await h.sweep()
        assert baseline.record.outcome == "complete", baseline.record
        vendor_resolved, vanished = case.change(world)

        page = case.drift_page if fault.kind == "drift" and case.drift_page else case.page
        world.faults.add(replace(fault, path=case.path, page=page, hits=0))
        faulty = [await h.sweep() for _ in range(2)]
        for result in faulty:
            expected = ("incomplete", "failed") if fault_id not in case.omitted_on else (
                "complete", "skipped")
            assert result.record.outcome in expected, result.record
        assert world.faults.fired, "the fault never fired: the case tests nothing"
        assert _resolved(faulty) == set()
        assert await h.store.items(state="resolved") == []

        world.faults.clear()
        healed = await h.sweep()
        assert healed.record.outcome == "complete", healed.record
        assert _resolved([healed]) == vendor_resolved
        case.advance(world)
        again = await h.sweep()
        assert _resolved([again]) == vanished


@pytest.mark.parametrize("state", ["error", "needsConsent", "notLicensed", "unknownState"])
async def test_threat_sources_not_ok_never_resolve(
    state: str, tmp_path: Path, aether365: tuple[Aether365World, RunningSim]
) -> None:
    world, sim = aether365
    source = aether365_source(sim.url, **{**ONLY, "threats": True}, http=HTTP)
    _threats_setup(world)
    async with Harness(parse_config(base_config(tmp_path, [source]))) as h:
        await h.sweep()
        vendor_resolved, vanished = _threats_change(world)
        world.add_risky_user(T, user_id="u9")
        for category in ("riskyUsers", "riskDetections", "securityAlerts"):
            world.set_source(T, category, state)
        faulty = [await h.sweep() for _ in range(2)]
        assert _resolved(faulty) == set()
        assert all(r.events == () for r in faulty)  # not even the new user is created
        for category in ("riskyUsers", "riskDetections", "securityAlerts"):
            world.set_source(T, category, "ok")
        healed = await h.sweep()
        assert _resolved([healed]) == vendor_resolved
        assert {e.key for e in healed.events if e.type is EventType.NEW} == {"u9"}
        assert _resolved([await h.sweep()]) == vanished
