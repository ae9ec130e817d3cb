"""`bridge state items` filters and `bridge state sweeps` per scope, run as an operator runs
them against a state file filled by real `bridge once` runs against the simulators."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.sim.aether365 import Aether365World
from bridge.sim.common import RunningSim
from bridge.sim.faults import Fault
from tests.conftest import SIM_SCANORBIT_KEY, aether365_source
from tests.security.hostile_text import HOSTILE_TITLE, UNSAFE

from .conftest import Vendor, bridge, operator_config, write_config

AetherPair = tuple[Aether365World, RunningSim]


async def items(config: Path, *args: str) -> list[dict[str, Any]]:
    code, out, err = await bridge("state", "items", "--json", "--limit", "1000", *args,
                                  config=config)
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


@pytest.mark.slow
async def test_items_by_source_kind_severity_and_since(
        tmp_path: Path, vendor: Vendor, aether365: AetherPair) -> None:
    world, sim = aether365
    world.populate("tenant-contoso", tests=10, failing=4)
    world.run_scan("tenant-contoso")
    for _ in range(2):
        world.add_risky_user("tenant-contoso")
    high = [vendor.world.add_finding(severity="high")["id"] for _ in range(3)]
    vendor.world.add_finding(severity="low")
    critical = vendor.world.add_finding(severity="critical")["id"]
    config = operator_config(tmp_path, vendor)
    config["sources"].append(aether365_source(sim.url, tenants=("contoso",), policies=False,
                                              scores=False))
    path = write_config(tmp_path, config)
    code, _, err = await bridge("once", config=path)
    assert code == 0, err

    everything = await items(path)
    scanorbit = await items(path, "--source", "scanorbit")
    assert {r["scope"] for r in scanorbit} == {"scanorbit"} and len(scanorbit) == 5
    aether = await items(path, "--source", "aether365")
    assert {r["scope"] for r in aether} == {"aether365/contoso"}
    assert len(everything) == len(scanorbit) + len(aether)

    assert {r["key"] for r in await items(path, "--severity", ">= high",
                                          "--source", "scanorbit")} == {*high, critical}
    assert {r["key"] for r in await items(path, "--severity", "critical,low",
                                          "--source", "scanorbit")} == {
        critical, *(r["key"] for r in scanorbit if r["severity"] == "low")}
    kinds = {r["kind"] for r in aether}
    assert len(kinds) == 2
    one_kind = sorted(kinds)[0]
    assert {r["kind"] for r in await items(path, "--kind", one_kind)} == {one_kind}
    assert len(await items(path, "--kind", ",".join(kinds))) == len(aether)

    before_change = datetime.now(UTC).isoformat()
    vendor.world.set_severity(high[0], "medium")
    code, _, err = await bridge("once", config=path)
    assert code == 0, err
    assert [r["key"] for r in await items(path, "--since", before_change)] == [high[0]]
    assert len(await items(path, "--since", "1h")) == len(everything)
    assert [r["key"] for r in await items(path, "--since", "1h", "--severity", "medium",
                                          "--source", "scanorbit")] == [high[0]]


async def test_bad_filters_are_usage_errors(tmp_path: Path, vendor: Vendor) -> None:
    path = write_config(tmp_path, operator_config(tmp_path, vendor))
    for args, why in ((("--severity", "urgent"), "severity 'urgent' is not one of"),
                      (("--since", "last tuesday"), "neither an ISO time"),
                      (("--source", "nosuch"), "no such source (known: scanorbit)")):
        code, out, err = await bridge("state", "items", *args, config=path)
        assert code == 2 and out == "", err
        assert why in err and "Traceback" not in err


async def test_sweeps_show_the_last_complete_one_and_why_later_ones_were_not(
        tmp_path: Path, vendor: Vendor) -> None:
    for _ in range(150):
        vendor.world.add_finding()
    path = write_config(tmp_path, operator_config(tmp_path, vendor))
    assert (await bridge("once", config=path))[0] == 0
    vendor.world.faults.add(Fault(kind="status", path="/findings$", page=2, status=503,
                                  times=-1))
    assert (await bridge("once", config=path))[0] == 3
    vendor.world.faults.clear()
    vendor.world.revoke(SIM_SCANORBIT_KEY)
    assert (await bridge("once", config=path))[0] == 1

    code, out, err = await bridge("state", "sweeps", "--json", config=path)
    assert code == 0, err
    (scope,) = json.loads(out)
    assert (scope["scope"], scope["source"]) == ("scanorbit", "scanorbit")
    assert scope["last_complete"]["seen"] == 150 and scope["last_complete"]["outcome"] == "complete"
    assert scope["latest"]["outcome"] == "failed"
    failed, incomplete = scope["not_complete_since"]
    assert failed["outcome"] == "failed" and "401" in failed["error"]
    assert incomplete["outcome"] == "incomplete" and "page 2" in incomplete["notes"]
    assert SIM_SCANORBIT_KEY not in out

    code, out, _ = await bridge("state", "sweeps", config=path)
    lines = out.splitlines()
    assert scope["baseline"].startswith("done 20")  # ended by the first (complete) sweep
    assert lines[0].startswith(f"scanorbit  source=scanorbit  baseline: {scope['baseline']}  "
                               "last complete: ")
    assert f"(#{scope['last_complete']['id']}, 150 seen, 150 events)" in lines[0]
    assert lines[0].endswith(f"latest: failed at {scope['latest']['started']}")
    assert lines[1].startswith(f"  #{failed['id']} ") and "failed: " in lines[1]
    assert lines[2].startswith(f"  #{incomplete['id']} ") and "incomplete: " in lines[2]

    code, out, _ = await bridge("state", "sweeps", "--history", "--json", config=path)
    assert [r["outcome"] for r in json.loads(out)] == ["failed", "incomplete", "complete"]


async def test_a_scope_never_swept_is_listed_from_the_config(
        tmp_path: Path, vendor: Vendor) -> None:
    path = write_config(tmp_path, operator_config(tmp_path, vendor))
    code, out, err = await bridge("state", "sweeps", config=path)
    assert code == 0, err
    assert out.splitlines() == [
        "scanorbit  source=scanorbit  baseline: pending  last complete: never  never swept"]


async def test_vendor_words_in_these_views_are_inert(tmp_path: Path, vendor: Vendor) -> None:
    """Sweep notes quote the vendor, muted rows carry its titles: shown escaped, never raw."""
    for _ in range(120):
        vendor.world.add_finding()
    vendor.world.add_finding(summary=HOSTILE_TITLE)
    vendor.world.faults.add(Fault(kind="status", path="/findings$", page=2, status=503,
                                  code=HOSTILE_TITLE, times=-1))
    path = write_config(tmp_path, operator_config(tmp_path, vendor, baseline="suppress"))
    assert (await bridge("once", config=path))[0] == 3
    for args in (("state", "sweeps"), ("state", "muted"), ("state", "items")):
        code, out, err = await bridge(*args, "--limit", "1000", config=path)
        assert code == 0, err
        assert {c for c in out if c in UNSAFE} <= {"\n"}, args
        assert "S3 bucket\\x1b[2J\\x1b[H\\x1b]0;owned\\x07" in out, args
    code, out, _ = await bridge("state", "muted", "--json", "--limit", "1000", config=path)
    assert any(row["title"] == HOSTILE_TITLE for row in json.loads(out))  # stored exactly
