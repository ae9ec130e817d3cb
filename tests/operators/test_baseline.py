"""The first sweep of a scope (bridge/baseline.py): on a 5,000-finding estate, `suppress`
delivers nothing and then only what is new, `summary` sends one summary per sink; routes and
sink kinds choose the mode; a tenant added later gets its own baseline. End to end with the
real `bridge once` against the ScanOrbit and Aether365 simulators, a file sink and a webhook
receiver; what only the pipeline shows (a sink kind's default, a failed first sweep) through
the test harness on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bridge.baseline import BASELINE_CURSOR, Baseline
from bridge.config import BridgeConfig, parse_config
from bridge.model import EventType, normalize_severity
from bridge.sim.aether365 import Aether365World
from bridge.sim.common import RunningSim
from bridge.sim.faults import Fault
from bridge.sinks.file import FileSinkConfig
from tests.conftest import SIM_SCANORBIT_KEY, aether365_source, base_config
from tests.support.harness import Harness
from tests.support.receiver import Receiver

from .conftest import Vendor, bridge, lines, operator_config, write_config

ESTATE = 5_000


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def two_sinks(tmp_path: Path, vendor: Vendor, receiver: Receiver, **source: Any
              ) -> dict[str, Any]:
    """The source, an archive file and a webhook; every event routed to both."""
    config = operator_config(tmp_path, vendor, **source)
    config["sinks"] = [
        {"name": "archive", "type": "file", "path": str(tmp_path / "archive.jsonl")},
        {"name": "hook", "type": "webhook", "url": receiver.url, "concurrency": 32,
         "batch_size": 500},
    ]
    config["routes"] = {"sinks": ["archive", "hook"]}
    return config


def archived(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(tmp_path / "archive.jsonl")]


async def muted(path: Path, *args: str) -> list[dict[str, Any]]:
    code, out, err = await bridge("state", "muted", "--json", "--limit", "100000", *args,
                                  config=path)
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


@pytest.mark.slow
async def test_suppress_delivers_nothing_then_only_what_is_new(
        tmp_path: Path, vendor: Vendor, receiver: Receiver) -> None:
    vendor.world.bulk_add(ESTATE)
    path = write_config(tmp_path, two_sinks(tmp_path, vendor, receiver, baseline="suppress"))
    code, _, err = await bridge("once", config=path, timeout=180)
    assert code == 0, err
    assert archived(tmp_path) == [] and receiver.received == []
    rows = await muted(path)
    assert len(rows) == 2 * ESTATE
    assert Counter((r["sink"], r["reason"]) for r in rows) == {
        ("archive", "baseline:suppress"): ESTATE, ("hook", "baseline:suppress"): ESTATE}
    assert {r["key"] for r in rows} == set(vendor.world.findings)
    code, out, _ = await bridge("state", "items", "--json", "--limit", "100000", config=path)
    assert len(json.loads(out)) == ESTATE  # the world is known, not forgotten

    fresh = vendor.world.add_finding(severity="critical")["id"]
    code, _, err = await bridge("once", config=path, timeout=120)
    assert code == 0, err
    assert [(e["type"], e["key"]) for e in archived(tmp_path)] == [("new", fresh)]
    assert [r.event.key for r in receiver.received] == [fresh]
    assert len(await muted(path)) == 2 * ESTATE  # nothing more was muted


async def test_summary_sends_one_summary_per_sink(
        tmp_path: Path, vendor: Vendor, receiver: Receiver) -> None:
    vendor.world.bulk_add(ESTATE)
    path = write_config(tmp_path, two_sinks(tmp_path, vendor, receiver, baseline="summary"))
    code, _, err = await bridge("once", config=path, timeout=180)
    assert code == 0, err
    (summary,) = archived(tmp_path)
    (hooked,) = receiver.received
    assert hooked.event.type is EventType.SUMMARY and hooked.event.key == "hook"
    assert (summary["type"], summary["kind"], summary["key"]) == ("summary", "baseline", "archive")
    assert summary["id"] != hooked.event.id  # one per sink
    by_severity = Counter(normalize_severity(f["severity"])
                          for f in vendor.world.findings.values())
    attributes = summary["attributes"]
    assert attributes["total"] == ESTATE and attributes["kind_finding"] == ESTATE
    for severity in ("info", "low", "medium", "high", "critical"):
        assert attributes[f"severity_{severity}"] == by_severity.get(severity, 0)
    assert summary["title"].startswith(f"Baseline of scanorbit: {ESTATE} open item(s)")
    assert hooked.event.attributes == attributes
    assert len(await muted(path, "--scope", "scanorbit")) == 2 * ESTATE

    fresh = vendor.world.add_finding()["id"]
    code, _, err = await bridge("once", config=path, timeout=120)
    assert code == 0, err
    assert [(e["type"], e["key"]) for e in archived(tmp_path)[1:]] == [("new", fresh)]
    assert [r.event.type.value for r in receiver.received] == ["summary", "new"]
    code, _, err = await bridge("once", config=path, timeout=120)  # a summary is sent once
    assert code == 0 and len(archived(tmp_path)) == 2 and len(receiver.received) == 2, err


async def test_a_route_overrides_the_source(
        tmp_path: Path, vendor: Vendor, receiver: Receiver) -> None:
    """Suppress the backlog, but page on every critical of it right away."""
    critical = {vendor.world.add_finding(severity="critical")["id"] for _ in range(7)}
    rest = {vendor.world.add_finding(severity="low")["id"] for _ in range(40)}
    config = two_sinks(tmp_path, vendor, receiver, baseline="suppress")
    config["routes"] = {"sinks": ["archive"], "routes": [
        {"match": {"severity": "critical"}, "sinks": ["hook"], "baseline": "deliver",
         "continue": True}]}
    path = write_config(tmp_path, config)
    code, _, err = await bridge("once", config=path)
    assert code == 0, err
    assert {r.event.key for r in receiver.received} == critical
    assert archived(tmp_path) == []
    assert {r["key"] for r in await muted(path)} == rest


async def test_a_tenant_added_later_gets_its_own_baseline(
        tmp_path: Path, aether365: tuple[Aether365World, RunningSim]) -> None:
    world, sim = aether365
    for tenant in ("tenant-contoso", "tenant-fabrikam"):
        world.populate(tenant, tests=30, failing=12)
        world.run_scan(tenant)
    source = aether365_source(sim.url, tenants=("contoso",), baseline="suppress",
                              policies=False, threats=False, scores=False)
    config = base_config(tmp_path, [source], log={"format": "json"})
    path = write_config(tmp_path, config)
    assert (await bridge("once", config=path))[0] == 0
    assert lines(tmp_path / "events.jsonl") == []

    world.set_test("tenant-contoso", "AE.9001", "failed", severity="High")
    world.run_scan("tenant-contoso")
    source["tenants"] = aether365_source(sim.url, tenants=("contoso", "fabrikam"))["tenants"]
    path = write_config(tmp_path, config)
    code, _, err = await bridge("once", config=path)
    assert code == 0, err
    delivered = [json.loads(line) for line in lines(tmp_path / "events.jsonl")]
    assert [(e["scope"], e["key"]) for e in delivered] == [("aether365/contoso", "AE.9001")]
    fabrikam = await muted(path, "--scope", "aether365/fabrikam")
    assert len(fabrikam) == 12 and {r["reason"] for r in fabrikam} == {"baseline:suppress"}
    code, out, _ = await bridge("state", "sweeps", "--json", config=path)
    assert {s["scope"]: s["baseline"][:4] for s in json.loads(out)} == {
        "aether365/contoso": "done", "aether365/fabrikam": "done"}


# -- what the pipeline shows ----------------------------------------------------------------


class ChatLikeSinkConfig(FileSinkConfig):
    """A sink kind that, like chat and ticketing sinks, wants a summary of a backlog."""

    default_baseline: ClassVar[Baseline] = "summary"


def with_chat_sink(config: BridgeConfig, tmp_path: Path) -> BridgeConfig:
    chat = ChatLikeSinkConfig(name="chat", type="file", path=tmp_path / "chat.jsonl")
    routes = config.routes.model_copy(update={"sinks": ["events", "chat"]})
    return config.model_copy(update={"sinks": [*config.sinks, chat], "routes": routes})


async def test_each_sink_kind_has_its_default(tmp_path: Path, vendor: Vendor) -> None:
    for _ in range(30):
        vendor.world.add_finding()
    config = with_chat_sink(parse_config(operator_config(tmp_path, vendor)), tmp_path)
    async with Harness(config) as h:
        first = await h.sweep()
        assert first.baseline
        sent = Counter((sinks, e.type.value) for e, sinks in first.deliveries)
        assert sent == {(("events",), "new"): 30, (("chat",), "summary"): 1}
        assert {(m.sink, m.reason) for m in first.muted} == {("chat", "baseline:summary")}
        assert len(await h.store.claim("chat", 100)) == 1
        assert len(await h.store.claim("events", 100)) == 30
        fresh = vendor.world.add_finding()["id"]
        second = await h.sweep()
        assert not second.baseline and second.muted == ()
        assert [(e.key, sinks) for e, sinks in second.deliveries] == [
            (fresh, ("events", "chat"))]


async def test_a_failed_first_sweep_keeps_the_baseline_an_incomplete_one_ends_it(
        tmp_path: Path, vendor: Vendor) -> None:
    """An incomplete first sweep ends the baseline (a scope that is never complete must not
    stay muted forever); what it could not read arrives later as new."""
    for _ in range(250):
        vendor.world.add_finding()
    config = parse_config(operator_config(tmp_path, vendor, baseline="suppress"))
    async with Harness(config) as h:
        vendor.world.revoke(SIM_SCANORBIT_KEY)
        assert (await h.sweep()).record.outcome == "failed"
        assert await h.store.load_cursor("scanorbit") == {}
        vendor.world.restore(SIM_SCANORBIT_KEY)
        vendor.world.faults.add(Fault(kind="status", path="/findings$", page=2, status=503,
                                      times=-1))
        partial = await h.sweep()
        assert partial.record.outcome == "incomplete" and partial.baseline
        assert len(partial.muted) == 100 and all(not s for _, s in partial.deliveries)
        assert BASELINE_CURSOR in await h.store.load_cursor("scanorbit")
        vendor.world.faults.clear()
        rest = await h.sweep()
        assert not rest.baseline and rest.muted == ()
        assert len([e for e, sinks in rest.deliveries if sinks == ("events",)]) == 150


async def test_a_scope_swept_before_baselines_existed_is_not_baselined(
        tmp_path: Path, vendor: Vendor) -> None:
    for _ in range(5):
        vendor.world.add_finding()
    path = tmp_path / "state" / "bridge.db"
    async with Harness(parse_config(operator_config(tmp_path, vendor))) as h:
        await h.sweep()
    # What a state written by an older bridge looks like: sweeps recorded, no marker.
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM cursors WHERE name = ?", (BASELINE_CURSOR,))
    conn.close()
    fresh = vendor.world.add_finding()["id"]
    async with Harness(parse_config(operator_config(tmp_path, vendor, baseline="suppress"))) as h:
        after_upgrade = await h.sweep()
        assert not after_upgrade.baseline
        assert [(e.key, s) for e, s in after_upgrade.deliveries] == [(fresh, ("events",))]
        assert BASELINE_CURSOR in await h.store.load_cursor("scanorbit")  # marked now
