"""The contract every source keeps: no faulty or incomplete answer ever resolves anything.

A source module adds a `Case` per item kind it sweeps (how to build its world, what a good
answer would resolve, where a fault hits) to tests/sources/test_no_false_resolution.py, and
the table runs every fault kind the simulators can inject against it:

With the fault in place, two sweeps must resolve nothing and count no misses. Once the fault
is cleared, the first sweep resolves exactly the vendor's resolutions and the second exactly
the vanished items (absence needs two complete sweeps): proof that the case would have
resolved, and that the faulty sweeps did not count as misses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_config
from bridge.model import EventType
from bridge.sim.common import RunningSim, SimWorld
from bridge.sim.faults import FAULT_KINDS, Fault
from bridge.sweep import SweepResult
from tests.conftest import base_config
from tests.support.harness import Harness

World = Any  # the simulator world of the case's vendor; each case knows which
# Fast retries and a short timeout: a fault costs a fraction of a second, not minutes.
HTTP = {"rate_limit_per_minute": 60_000, "backoff_initial": 0.01, "backoff_max": 0.02,
        "max_retries": 1, "timeout": 0.3}


@dataclass(frozen=True)
class Case:
    """One source kind: how to build its world and what a good answer would resolve."""

    name: str
    vendor: str  # which simulator: "scanorbit" | "aether365" | "ayliea"
    # The source's config, given the simulator's URL and overrides (tests/conftest.py).
    build: Callable[..., dict[str, Any]]
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


def fault_table(cases: Sequence[Case]) -> Iterator[Any]:
    """Every (case, fault) pair that applies, as pytest parameters."""
    for case in cases:
        for fault_id, fault in FAULTS.items():
            if fault_id in case.not_applicable:
                continue
            yield pytest.param(case, fault_id, fault, id=f"{case.name}-{fault_id}")


def check_covers_every_fault_kind(cases: Sequence[Case]) -> None:
    """A new fault kind in the simulators must join the table (or be ruled out per case)."""
    assert {f.kind for f in FAULTS.values()} == set(FAULT_KINDS)
    for case in cases:
        assert set(case.not_applicable) <= set(FAULTS), case.name


def resolved_keys(results: Sequence[SweepResult]) -> set[str]:
    return {e.key for r in results for e in r.events if e.type is EventType.RESOLVED}


async def faulty_answers_never_resolve(case: Case, fault_id: str, fault: Fault, world: SimWorld,
                                       sim: RunningSim, tmp_path: Path) -> None:
    cfg = parse_config(base_config(tmp_path, [case.build(sim.url, **case.source, http=HTTP)]))
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
        assert resolved_keys(faulty) == set()
        assert await h.store.list_items(state="resolved") == []

        world.faults.clear()
        healed = await h.sweep()
        assert healed.record.outcome == "complete", healed.record
        assert resolved_keys([healed]) == vendor_resolved
        case.advance(world)
        again = await h.sweep()
        assert resolved_keys([again]) == vanished
