"""`bridge once` tells cron and CI what happened by its exit code: 0 only when every scope was
swept completely and every event delivered; 3 when everything was delivered but a sweep was
incomplete (partial coverage); 1 when a sweep failed or events were not delivered."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.sim.faults import Fault
from tests.conftest import SIM_SCANORBIT_KEY
from tests.support.receiver import Receiver

from .conftest import Vendor, bridge, lines, operator_config, write_config


async def test_complete_and_delivered_is_0(tmp_path: Path, vendor: Vendor) -> None:
    for _ in range(120):
        vendor.world.add_finding()
    path = write_config(tmp_path, operator_config(tmp_path, vendor))
    code, _, err = await bridge("once", "--deliver-timeout", "20", config=path)
    assert code == 0, err
    assert len(lines(tmp_path / "events.jsonl")) == 120


async def test_an_incomplete_sweep_is_3_and_what_it_saw_is_delivered(
        tmp_path: Path, vendor: Vendor) -> None:
    for _ in range(250):
        vendor.world.add_finding()
    vendor.world.faults.add(Fault(kind="status", path="/findings$", page=2, status=503,
                                  times=-1))
    path = write_config(tmp_path, operator_config(tmp_path, vendor))
    code, _, err = await bridge("once", "--deliver-timeout", "20", config=path)
    assert code == 3, err
    sweep = next(json.loads(line) for line in err.splitlines()
                 if '"sweep_done"' in line)
    assert sweep["outcome"] == "incomplete" and "page 2" in sweep["notes"][0]
    assert len(lines(tmp_path / "events.jsonl")) == 100  # page 1, delivered
    vendor.world.faults.clear()
    code, _, err = await bridge("once", "--deliver-timeout", "20", config=path)
    assert code == 0, err
    assert len(lines(tmp_path / "events.jsonl")) == 250


async def test_a_failed_sweep_is_1(tmp_path: Path, vendor: Vendor) -> None:
    vendor.world.add_finding()
    vendor.world.revoke(SIM_SCANORBIT_KEY)
    path = write_config(tmp_path, operator_config(tmp_path, vendor))
    code, _, err = await bridge("once", "--deliver-timeout", "5", config=path)
    assert code == 1
    failed = [json.loads(line) for line in err.splitlines() if '"sweep_failed"' in line]
    assert [line["kind"] for line in failed] == ["auth"]


async def test_undelivered_events_are_1_even_when_the_sweep_was_incomplete(
        tmp_path: Path, vendor: Vendor) -> None:
    """A failure wins over partial coverage: events are waiting in the outbox."""
    for _ in range(150):
        vendor.world.add_finding()
    vendor.world.faults.add(Fault(kind="status", path="/findings$", page=2, status=503,
                                  times=-1))
    receiver = await Receiver().start()
    await receiver.stop()  # down: nothing listens there (no attempts spent, no dead letters)
    config = operator_config(tmp_path, vendor)
    config["sinks"] = [{"name": "hook", "type": "webhook", "url": receiver.url,
                        "backoff_initial": 0.05, "backoff_max": 0.1}]
    config["routes"] = {"sinks": ["hook"]}
    path = write_config(tmp_path, config)
    code, _, err = await bridge("once", "--deliver-timeout", "1", config=path)
    assert code == 1
    assert '"event": "undelivered"' in err and '"hook": 100' in err


async def test_dead_lettered_events_are_1(tmp_path: Path, vendor: Vendor) -> None:
    for _ in range(3):
        vendor.world.add_finding()
    receiver = await Receiver(mode="400").start()
    try:
        config = operator_config(tmp_path, vendor)
        config["sinks"] = [{"name": "hook", "type": "webhook", "url": receiver.url}]
        config["routes"] = {"sinks": ["hook"]}
        path = write_config(tmp_path, config)
        code, _, err = await bridge("once", "--deliver-timeout", "10", config=path)
    finally:
        await receiver.stop()
    assert code == 1
    assert '"event": "dead_lettered_during_run"' in err and '"hook": 3' in err


async def test_the_codes_are_documented_in_the_help(tmp_path: Path) -> None:
    code, out, _ = await bridge("once", "--help", config=tmp_path / "unused.yaml")
    assert code == 0
    assert "exit codes:" in out
    assert "  3  everything delivered, but a sweep was incomplete" in out


def test_the_codes_are_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "| 3 | everything was delivered, but a sweep was incomplete" in readme
