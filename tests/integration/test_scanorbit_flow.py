"""ScanOrbit → diff → routes → outbox → file sinks, over real HTTP and a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from bridge.config import BridgeConfig, parse_config
from bridge.daemon import Daemon
from bridge.model import EventType
from bridge.sim.common import RunningSim
from bridge.sim.faults import Fault
from bridge.sim.scanorbit import ScanOrbitWorld
from bridge.sweep import SweepResult
from tests.conftest import SIM_SCANORBIT_KEY, base_config, scanorbit_source
from tests.support.harness import Harness

SimPair = tuple[ScanOrbitWorld, RunningSim]


def config_for(tmp_path: Path, url: str, **source: Any) -> BridgeConfig:
    source.setdefault("full_resweep_interval", 0)
    return parse_config(base_config(tmp_path, [scanorbit_source(url, **source)]))


@pytest.fixture
async def harness(tmp_path: Path, scanorbit: SimPair) -> AsyncIterator[Harness]:
    _, sim = scanorbit
    async with Harness(config_for(tmp_path, sim.url)) as h:
        yield h


def types(result: SweepResult) -> list[str]:
    return [e.type.value for e in result.events]


async def test_first_sweep_emits_new_for_each_open_finding(scanorbit: SimPair, harness: Harness) -> None:
    world, _ = scanorbit
    open_ids = {world.add_finding(severity="high")["id"] for _ in range(230)}
    snoozed = world.add_finding()
    world.snooze(snoozed["id"])
    world.resolve(world.add_finding()["id"])

    result = await harness.sweep()

    assert result.record.outcome == "complete"
    assert result.record.requests == 2 + 3  # scan probe, accounts, 3 pages of 100
    assert {e.key for e in result.events} == open_ids
    assert set(types(result)) == {"new"}
    event = next(e for e in result.events if e.key == min(open_ids))
    assert event.severity == "high" and event.vendor == "scanorbit" and event.kind == "finding"
    assert event.raw["id"] == event.key and event.title == event.raw["summary"]


async def test_second_identical_sweep_emits_nothing(scanorbit: SimPair, harness: Harness) -> None:
    world, _ = scanorbit
    for _ in range(20):
        world.add_finding()
    assert len((await harness.sweep()).events) == 20
    again = await harness.sweep()
    assert again.record.outcome == "complete"
    assert again.events == ()


async def test_unchanged_latest_scan_skips_the_sweep(tmp_path: Path, scanorbit: SimPair) -> None:
    world, sim = scanorbit
    for _ in range(150):
        world.add_finding()
    world.complete_scan()
    # A large estate for its rate budget (no share of it for re-reads): the probe decides.
    async with Harness(config_for(tmp_path, sim.url, full_resweep_interval=3600,
                                  resweep_budget_share=0)) as h:
        first = await h.sweep()
        assert len(first.events) == 150
        cheap = await h.sweep()
        assert cheap.record.outcome == "skipped" and cheap.record.requests == 1
        world.resolve(next(iter(world.findings)))
        world.complete_scan()
        after_scan = await h.sweep()
        assert after_scan.record.outcome == "complete" and types(after_scan) == ["resolved"]


async def test_vendor_resolution_and_snooze_resolve_at_once(scanorbit: SimPair, harness: Harness) -> None:
    world, _ = scanorbit
    a, b, c = (world.add_finding()["id"] for _ in range(3))
    await harness.sweep()
    world.resolve(a)
    world.snooze(b)
    result = await harness.sweep()
    reasons = {e.key: (e.type.value, e.reason) for e in result.events}
    assert reasons == {a: ("resolved", "vendor status resolved"),
                       b: ("resolved", "vendor status snoozed")}
    assert c not in reasons


async def test_snooze_can_be_configured_as_active(tmp_path: Path, scanorbit: SimPair) -> None:
    world, sim = scanorbit
    fid = world.add_finding()["id"]
    async with Harness(config_for(tmp_path, sim.url, inactive_statuses=["resolved"])) as h:
        await h.sweep()
        world.snooze(fid)
        result = await h.sweep()
    assert types(result) == ["changed"]
    assert result.events[0].changes == {"status": ("open", "snoozed")}


async def test_vanished_finding_resolves_only_after_configured_misses(
    tmp_path: Path, scanorbit: SimPair
) -> None:
    world, sim = scanorbit
    keep, gone = world.add_finding()["id"], world.add_finding()["id"]
    async with Harness(config_for(tmp_path, sim.url, resolve_after_misses=3)) as h:
        await h.sweep()
        world.remove(gone)
        assert (await h.sweep()).events == ()
        assert (await h.sweep()).events == ()
        third = await h.sweep()
    assert [(e.type.value, e.key) for e in third.events] == [("resolved", gone)]
    assert third.events[0].reason == "absent from 3 consecutive complete sweeps"
    assert keep != gone


async def test_server_error_mid_pagination_resolves_nothing(scanorbit: SimPair, harness: Harness) -> None:
    world, _ = scanorbit
    ids = [world.add_finding()["id"] for _ in range(250)]
    await harness.sweep()
    world.resolve(ids[0])
    for fid in ids[1:60]:
        world.remove(fid)
    world.faults.add(Fault(kind="status", path="/findings$", page=2, status=503, times=-1))
    for _ in range(3):
        broken = await harness.sweep()
        assert broken.record.outcome == "incomplete"
        assert "page 2" in broken.record.notes[0] and "503" in broken.record.notes[0]
        assert [e for e in broken.events if e.type is EventType.RESOLVED] == []
    world.faults.clear()
    healed = [await harness.sweep() for _ in range(2)]
    resolved = {e.key for r in healed for e in r.events if e.type is EventType.RESOLVED}
    # Incomplete sweeps counted no misses: the vanished need two *complete* sweeps.
    assert {e.key for e in healed[0].events} == {ids[0]}
    assert resolved == set(ids[:60])


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="drift", path="/findings$", page=1, drift=3, times=-1),
        Fault(kind="empty", path="/findings$", page=2, times=-1),
        Fault(kind="truncate", path="/findings$", page=2, times=-1),
        Fault(kind="invalid_json", path="/findings$", page=2, times=-1),
        Fault(kind="schema", path="/findings$", page=2, times=-1, variant="missing_id"),
        Fault(kind="schema", path="/findings$", page=2, times=-1),
        Fault(kind="reset", path="/findings$", page=2, times=-1),
        Fault(kind="timeout", path="/findings$", page=2, times=-1, delay=1.0),
        Fault(kind="status", path="/findings$", page=2, status=429, times=-1, retry_after="0"),
    ],
    ids=lambda f: f"{f.kind}{'-' + f.variant if f.variant else ''}",
)
async def test_faulty_answers_never_resolve(fault: Fault, tmp_path: Path, scanorbit: SimPair) -> None:
    world, sim = scanorbit
    ids = [world.add_finding()["id"] for _ in range(250)]
    http = {"rate_limit_per_minute": 60_000, "backoff_initial": 0.01, "backoff_max": 0.02,
            "max_retries": 1, "timeout": 0.3}
    async with Harness(config_for(tmp_path, sim.url, http=http)) as harness:
        await _faulty_sweeps(fault, world, ids, harness)


async def _faulty_sweeps(fault: Fault, world: ScanOrbitWorld, ids: list[str], harness: Harness) -> None:
    await harness.sweep()
    for fid in ids[120:]:
        world.remove(fid)  # vanished upstream: only complete sweeps may resolve them
    world.resolve(ids[0])
    world.faults.add(fault)
    for _ in range(3):
        result = await harness.sweep()
        assert result.record.outcome in ("incomplete", "failed"), result.record
        assert [e for e in result.events if e.type is EventType.RESOLVED] == []
    rows = await harness.store.list_items(state="resolved", limit=1000)
    assert rows == []


async def test_drift_is_retried_once_and_then_clean(scanorbit: SimPair, harness: Harness) -> None:
    world, _ = scanorbit
    for _ in range(250):
        world.add_finding()
    world.faults.add(Fault(kind="drift", path="/findings$", page=1, drift=2, times=1))
    result = await harness.sweep()
    assert result.record.outcome == "complete"
    assert len(result.events) == 252  # the two inserted mid-sweep are found by the retry
    assert result.record.notes == ()


async def test_reopened_and_changed(scanorbit: SimPair, harness: Harness) -> None:
    world, _ = scanorbit
    fid = world.add_finding(severity="medium")["id"]
    await harness.sweep()
    world.set_severity(fid, "high")
    changed = await harness.sweep()
    assert types(changed) == ["changed"]
    assert changed.events[0].changes == {"severity": ("medium", "high"),
                                         "vendor_severity": ("medium", "high")}
    world.resolve(fid)
    resolved = await harness.sweep()
    world.reopen(fid)
    reopened = await harness.sweep()
    assert types(resolved) == ["resolved"] and types(reopened) == ["reopened"]
    assert [changed.events[0].counter, resolved.events[0].counter, reopened.events[0].counter] == [2, 3, 4]
    assert len({changed.events[0].id, resolved.events[0].id, reopened.events[0].id}) == 3


async def test_unknown_severity_is_a_value_not_an_error(scanorbit: SimPair, harness: Harness) -> None:
    world, _ = scanorbit
    world.add_finding(severity="critical")
    world.add_finding(severity="trivial")
    result = await harness.sweep()
    assert result.record.outcome == "complete"
    assert sorted((e.severity, e.vendor_severity) for e in result.events) == [
        ("critical", "critical"), ("info", "trivial")]


async def test_an_attribute_sent_as_an_object_stays_flat_and_deliverable(
        scanorbit: SimPair, harness: Harness) -> None:
    """Attributes are flat by contract and stored events are decoded with that type checked:
    a vendor object where a string belongs must not reach the outbox as an object."""
    world, _ = scanorbit
    world.add_finding(awsAccountId={"id": "123456789012", "alias": "prod"}, resourceId=["i-1", "i-2"])
    result = await harness.sweep()
    (event,) = result.events
    assert event.attributes["awsAccountId"] == '{"alias":"prod","id":"123456789012"}'
    assert event.attributes["resourceId"] == '["i-1","i-2"]'
    assert [d.event for d in await harness.store.claim("events", 10)] == [event]


async def test_revoked_key_fails_the_sweep_without_leaking_it(scanorbit: SimPair, harness: Harness) -> None:
    world, _ = scanorbit
    world.add_finding()
    world.revoke(SIM_SCANORBIT_KEY)
    result = await harness.sweep()
    assert result.record.outcome == "failed"
    assert result.error is not None and result.error.kind == "auth"
    assert "401" in (result.record.error or "")
    assert SIM_SCANORBIT_KEY not in (result.record.error or "")
    world.restore(SIM_SCANORBIT_KEY)
    assert types(await harness.sweep()) == ["new"]


async def test_new_findings_are_enriched_when_configured(tmp_path: Path, scanorbit: SimPair) -> None:
    world, sim = scanorbit
    for _ in range(5):
        world.add_finding()
    async with Harness(config_for(tmp_path, sim.url, enrich_new=3)) as h:
        result = await h.sweep()
    enriched = [e for e in result.events if "resource_name" in e.attributes]
    assert len(enriched) == 3
    assert result.record.requests == 3 + 3  # scan probe, accounts, one page, 3 enrichments


async def test_routes_select_sinks(tmp_path: Path, scanorbit: SimPair) -> None:
    world, sim = scanorbit
    high = {world.add_finding(severity="high")["id"] for _ in range(4)}
    low = {world.add_finding(severity="low")["id"] for _ in range(3)}
    raw = base_config(tmp_path, [scanorbit_source(sim.url)])
    raw["sinks"] = [
        {"name": "all", "type": "file", "path": str(tmp_path / "all.jsonl")},
        {"name": "siem", "type": "file", "path": str(tmp_path / "siem.jsonl")},
        {"name": "pager", "type": "file", "path": str(tmp_path / "pager.jsonl")},
    ]
    raw["routes"] = {
        "sinks": ["all"],
        "routes": [
            {"match": {"severity": ">= high"}, "sinks": ["siem"], "continue": True},
            {"match": {"type": ["new", "reopened"], "severity": {"gte": "high"}}, "sinks": ["pager"]},
            {"match": {"severity": "low"}},  # inherits the root's sinks
        ],
    }
    config = parse_config(raw)
    assert await Daemon(config).once(deliver_timeout=10) == 0

    def keys(name: str) -> set[str]:
        return {json.loads(line)["key"] for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()}

    assert keys("siem") == high and keys("pager") == high and keys("all") == low


async def test_upgrade_to_tracking_vendor_severity_sends_no_storm(
        tmp_path: Path, scanorbit: SimPair) -> None:
    """Stored items tracked as (title, severity, status) meet the default that also tracks
    vendor_severity: re-baselined without an event, logged once; then a vendor-side severity
    change that normalises to the same severity is a `changed` event."""
    world, sim = scanorbit
    fid = world.add_finding(severity="info")["id"]
    for _ in range(4):
        world.add_finding(severity="high")
    old = config_for(tmp_path, sim.url, tracked_fields=["title", "severity", "status"])
    async with Harness(old) as h:
        assert types(await h.sweep()) == ["new"] * 5
    async with Harness(config_for(tmp_path, sim.url)) as h:
        with structlog.testing.capture_logs() as logs:
            upgraded = await h.sweep()
            quiet = await h.sweep()
        assert upgraded.record.outcome == "complete"
        assert upgraded.events == () and upgraded.rebaselined == 5
        assert quiet.events == () and quiet.rebaselined == 0
        rebaselined = [e for e in logs if e["event"] == "tracked_fields_rebaselined"]
        assert [e["items"] for e in rebaselined] == [5]
        world.set_severity(fid, "trivial")
        changed = await h.sweep()
    assert types(changed) == ["changed"]
    event = changed.events[0]
    assert event.key == fid and event.changes == {"vendor_severity": ("info", "trivial")}
    assert (event.severity, event.vendor_severity, event.counter) == ("info", "trivial", 2)


async def test_tracked_fields_swapped_for_as_many_others_send_no_storm(
        tmp_path: Path, scanorbit: SimPair) -> None:
    """An operator swaps `title` for `status` in a two-field list: the title each item
    remembers is no status that became "open". Every item is re-baselined, none is `changed`;
    then a real severity change is one."""
    world, sim = scanorbit
    ids = [world.add_finding(severity="high")["id"] for _ in range(5)]
    async with Harness(config_for(tmp_path, sim.url, tracked_fields=["severity", "title"])) as h:
        assert types(await h.sweep()) == ["new"] * 5
    async with Harness(config_for(tmp_path, sim.url, tracked_fields=["severity", "status"])) as h:
        swapped = await h.sweep()
        assert swapped.events == () and swapped.rebaselined == 5
        world.set_severity(ids[0], "low")
        changed = await h.sweep()
    assert types(changed) == ["changed"] and changed.rebaselined == 0
    assert changed.events[0].changes == {"severity": ("high", "low")}


async def test_a_state_file_from_before_field_names_were_stored_sends_no_event(
        tmp_path: Path, scanorbit: SimPair) -> None:
    """Items stored with their tracked values only (as bridge wrote them before it stored the
    fields' names) are read as tracked for today's fields: an upgrade sends nothing, names
    each list once, and a real change is still reported."""
    world, sim = scanorbit
    ids = [world.add_finding(severity="high")["id"] for _ in range(5)]
    config = config_for(tmp_path, sim.url)
    async with Harness(config) as h:
        assert types(await h.sweep()) == ["new"] * 5
    with sqlite3.connect(tmp_path / "state" / "bridge.db") as db:
        assert db.execute("UPDATE items SET tracked = json_remove(tracked, '$[0]')").rowcount == 5
    db.close()
    world.set_severity(ids[0], "low")
    async with Harness(config) as h:
        upgraded = await h.sweep()
        quiet = await h.sweep()
    assert types(upgraded) == ["changed"] and upgraded.rebaselined == 0
    assert upgraded.events[0].changes == {"severity": ("high", "low"),
                                          "vendor_severity": ("high", "low")}
    assert quiet.events == ()
    with sqlite3.connect(tmp_path / "state" / "bridge.db") as db:
        named = db.execute("SELECT count(*) FROM items WHERE json_type(tracked, '$[0]') = 'array'")
        assert named.fetchone() == (5,)
    db.close()
