"""No faulty or incomplete answer ever resolves anything: every fault kind for every source
kind, through the shared SourceContract (tests/support/source_contract.py).

Each case sets up a world, sweeps it once, then makes upstream changes that a *good* answer
would turn into resolutions (some items resolved by the vendor, some gone); the contract says
what must (not) happen with the fault in place and after it clears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_config
from bridge.model import EventType
from bridge.sim.aether365 import Aether365World
from bridge.sim.ayliea import AylieaWorld
from bridge.sim.common import RunningSim
from bridge.sim.faults import Fault
from bridge.sim.scanorbit import ScanOrbitWorld
from tests.conftest import aether365_source, ayliea_source, base_config, scanorbit_source
from tests.support.harness import Harness
from tests.support.source_contract import (
    HTTP,
    Case,
    check_covers_every_fault_kind,
    fault_table,
    faulty_answers_never_resolve,
    resolved_keys,
)

T = "tenant-contoso"


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


# -- ScanOrbit --------------------------------------------------------------------------------

def _findings_setup(world: ScanOrbitWorld) -> None:
    for _ in range(250):
        world.add_finding()


def _findings_change(world: ScanOrbitWorld) -> tuple[set[str], set[str]]:
    ids = list(world.findings)
    for finding_id in ids[120:125]:
        world.remove(finding_id)  # vanished upstream: only complete sweeps may resolve them
    world.resolve(ids[0])
    return {ids[0]}, set(ids[120:125])


ONLY: dict[str, Any] = {"compliance": False, "threats": False, "policies": False}
CASES = [
    Case("scanorbit/finding", "scanorbit", scanorbit_source, {"full_resweep_interval": 0},
         "/findings$", 2, _findings_setup, _findings_change, drift_page=1),
    Case("aether365/test_result (result pages)", "aether365", aether365_source,
         {**ONLY, "compliance": True, "page_size": 50}, "/results$", 2,
         _tests_setup, _tests_change, _rescan),
    Case("aether365/test_result (scan probe)", "aether365", aether365_source,
         {**ONLY, "compliance": True, "page_size": 50}, "/tenants/me/scans$", None,
         _tests_setup, _tests_change, _rescan,
         omitted_on=frozenset({"empty"}),  # no completed scan listed: nothing is swept
         not_applicable={"drift": "the probe reads one row; drift only adds newer scans, "
                                  "which the next cycle sweeps"}),
    Case("aether365/risky_user+risk_detection+security_alert", "aether365", aether365_source,
         {**ONLY, "threats": True}, "/tenants/me/threats$", None,
         _threats_setup, _threats_change, omitted_on=frozenset({"empty"}),
         not_applicable={"drift": SNAPSHOT_DRIFT}),
    Case("aether365/policy", "aether365", aether365_source, {**ONLY, "policies": True},
         "/tenants/me/policies$", None, _policies_setup, _policies_change,
         not_applicable={"drift": SNAPSHOT_DRIFT,
                         "schema-missing_id": "policy rows are keyed by `key` and have no `id` "
                                              "to drop; `schema` covers a broken shape"}),
    Case("ayliea/recommendation", "ayliea", ayliea_source, {"scores": False}, "/recommendations$", 2,
         _recs_setup, _recs_change, drift_page=1),
    Case("ayliea/score", "ayliea", ayliea_source, {"recommendations": False}, "/scores$", None,
         _scores_setup, _scores_change, omitted_on=frozenset({"empty"}),
         not_applicable={"drift": SNAPSHOT_DRIFT,
                         "schema-missing_id": "score rows are keyed by `framework_id` and have "
                                              "no `id` to drop; `schema` covers a broken shape"}),
    Case("ayliea/discovery", "ayliea", ayliea_source,
         {"recommendations": False, "scores": False, "discovery": True}, "/discovery$", None,
         _platforms_setup, _platforms_change, omitted_on=frozenset({"empty"}),
         not_applicable={"drift": SNAPSHOT_DRIFT}),
]


def test_the_table_covers_every_fault_kind_for_every_case() -> None:
    check_covers_every_fault_kind(CASES)


@pytest.mark.parametrize(("case", "fault_id", "fault"), list(fault_table(CASES)))
async def test_faulty_answers_never_resolve(
    case: Case, fault_id: str, fault: Fault, tmp_path: Path,
    scanorbit: tuple[ScanOrbitWorld, RunningSim],
    aether365: tuple[Aether365World, RunningSim], ayliea: tuple[AylieaWorld, RunningSim],
) -> None:
    sims: dict[str, tuple[Any, RunningSim]] = {
        "scanorbit": scanorbit, "aether365": aether365, "ayliea": ayliea}
    world, sim = sims[case.vendor]
    await faulty_answers_never_resolve(case, fault_id, fault, world, sim, tmp_path)


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
        assert resolved_keys(faulty) == set()
        assert all(r.events == () for r in faulty)  # not even the new user is created
        for category in ("riskyUsers", "riskDetections", "securityAlerts"):
            world.set_source(T, category, "ok")
        healed = await h.sweep()
        assert resolved_keys([healed]) == vendor_resolved
        assert {e.key for e in healed.events if e.type is EventType.NEW} == {"u9"}
        assert resolved_keys([await h.sweep()]) == vanished
