"""`bridge once --dry-run`: sweeps, diffs and routes for real against the simulator, prints per
sink what it would send, and writes nothing: the state file stays byte for byte as it was (or
is not created), no sink is touched, and a real run afterwards sends exactly what was shown."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bridge.sim.faults import Fault
from tests.support.daemon import DaemonProcess
from tests.support.receiver import Receiver

from .conftest import Vendor, bridge, lines, operator_config, write_config


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` (the state file, its -wal and -shm) with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def with_hook(tmp_path: Path, vendor: Vendor, receiver: Receiver, **source: Any
              ) -> dict[str, Any]:
    config = operator_config(tmp_path, vendor, **source)
    config["sinks"].append({"name": "hook", "type": "webhook", "url": receiver.url})
    config["routes"] = {"sinks": ["events"], "routes": [
        {"match": {"severity": ">= high"}, "sinks": ["events", "hook"]}]}
    return config


async def test_on_existing_state_it_shows_what_a_run_would_send_and_writes_nothing(
        tmp_path: Path, vendor: Vendor, receiver: Receiver) -> None:
    world = vendor.world
    ids = [world.add_finding(severity="medium")["id"] for _ in range(20)]
    path = write_config(tmp_path, with_hook(tmp_path, vendor, receiver))
    assert (await bridge("once", config=path))[0] == 0
    world.resolve(ids[0])
    world.set_severity(ids[1], "critical")
    fresh = [world.add_finding(severity=s)["id"] for s in ("high", "low")]
    state = tmp_path / "state"
    before = fingerprint(state)
    archived = lines(tmp_path / "events.jsonl")

    code, out, err = await bridge("once", "--dry-run", config=path)
    assert code == 0, err
    text = out.splitlines()
    assert text[0].startswith("dry run: nothing was written or sent")
    assert "scanorbit: complete, 22 seen, 4 events" in text  # the resolved one is listed
    assert ("sink events (file): 4 event(s) would be sent (1 changed, 2 new, 1 resolved)"
            in text)
    assert "sink hook (webhook): 2 event(s) would be sent (1 changed, 1 new)" in text
    assert fingerprint(state) == before
    assert lines(tmp_path / "events.jsonl") == archived and receiver.received == []

    code, out, err = await bridge("once", "--dry-run", "--json", config=path)
    assert code == 0, err
    planned = json.loads(out)
    assert planned["dry_run"] is True and planned["sweeps"][0]["baseline"] is False
    hook_plan = planned["sinks"]["hook"]
    assert {e["key"] for e in hook_plan["events"]} == {ids[1], fresh[0]}
    events_plan = [e["id"] for e in planned["sinks"]["events"]["events"]]
    assert fingerprint(state) == before

    assert (await bridge("once", config=path))[0] == 0  # the real run sends just that
    sent = [json.loads(line)["id"] for line in lines(tmp_path / "events.jsonl")[len(archived):]]
    assert sent == events_plan
    assert sorted(r.event.id for r in receiver.received) == sorted(
        e["id"] for e in hook_plan["events"])


async def test_on_a_fresh_state_it_shows_the_baseline_and_creates_nothing(
        tmp_path: Path, vendor: Vendor) -> None:
    for _ in range(300):
        vendor.world.add_finding()
    path = write_config(tmp_path, operator_config(tmp_path, vendor, baseline="summary"))
    code, out, err = await bridge("once", "--dry-run", config=path)
    assert code == 0, err
    text = out.splitlines()
    assert "scanorbit: complete, 300 seen, 300 events, first sweep (baseline)" in text
    (line,) = [t for t in text if t.startswith("sink events")]
    assert line == ("sink events (file): 1 event(s) would be sent (1 summary); "
                    "300 muted (baseline:summary)")
    assert text[text.index(line) + 1].startswith(
        "  SUMMARY   ") and "Baseline of scanorbit: 300 open item(s)" in out
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "events.jsonl").exists()


async def test_it_shows_the_first_few_and_says_how_many_more(
        tmp_path: Path, vendor: Vendor) -> None:
    for _ in range(25):
        vendor.world.add_finding()
    path = write_config(tmp_path, operator_config(tmp_path, vendor))
    code, out, err = await bridge("once", "--dry-run", "--show", "3", config=path)
    assert code == 0, err
    text = out.splitlines()
    start = text.index("sink events (file): 25 event(s) would be sent (25 new)")
    assert [t[:11] for t in text[start + 1:start + 4]] == ["  NEW      "] * 3
    assert text[start + 4] == "  … and 22 more (--json lists them all)"


async def test_an_incomplete_sweep_exits_3_in_a_dry_run_too(
        tmp_path: Path, vendor: Vendor) -> None:
    for _ in range(150):
        vendor.world.add_finding()
    vendor.world.faults.add(Fault(kind="status", path="/findings$", page=2, status=503,
                                  times=-1))
    path = write_config(tmp_path, operator_config(tmp_path, vendor))
    code, out, _ = await bridge("once", "--dry-run", config=path)
    assert code == 3
    assert "scanorbit: incomplete, 100 seen, 100 events, first sweep (baseline): findings " \
           "page 2" in out


async def test_beside_a_running_daemon_it_reads_what_the_daemon_committed(
        tmp_path: Path, vendor: Vendor) -> None:
    """The daemon holds the file open (its -wal and -shm exist): the dry run's copy reads
    through them and sees the daemon's latest commits."""
    for _ in range(10):
        vendor.world.add_finding()
    config = operator_config(tmp_path, vendor)
    daemon = await DaemonProcess(config, tmp_path).start()
    try:
        await daemon.wait_log("sweep_done")
        assert (tmp_path / "state" / "bridge.db-wal").exists()
        fresh = vendor.world.add_finding()["id"]
        code, out, err = await bridge("once", "--dry-run", "--json",
                                      config=daemon.config_path)
        assert code == 0, err
        planned = json.loads(out)["sinks"]["events"]["events"]
        assert [e["key"] for e in planned] == [fresh]
    finally:
        assert await daemon.stop() == 0


async def test_it_shows_what_an_ended_silence_would_re_notify(
        tmp_path: Path, vendor: Vendor) -> None:
    fid = vendor.world.add_finding(severity="low")["id"]
    path = write_config(tmp_path, operator_config(tmp_path, vendor))
    assert (await bridge("once", config=path))[0] == 0
    code, out, err = await bridge("silence", "add", "--match", f"key={fid}", "--duration", "1h",
                                  "--reason", "change window", "--json", config=path)
    assert code == 0, err
    sid = json.loads(out)["id"]
    vendor.world.set_severity(fid, "high")
    assert (await bridge("once", config=path))[0] == 0
    assert (await bridge("silence", "expire", sid, config=path))[0] == 0
    before = fingerprint(tmp_path / "state")

    code, out, err = await bridge("once", "--dry-run", "--json", config=path)
    assert code == 0, err
    (event,) = json.loads(out)["sinks"]["events"]["events"]
    assert (event["key"], event["type"], event["severity"]) == (fid, "changed", "high")
    assert event["reason"] == f"silence {sid} ended: 1 event(s) were held back"
    assert fingerprint(tmp_path / "state") == before
    assert (await bridge("once", config=path))[0] == 0
    assert json.loads(lines(tmp_path / "events.jsonl")[-1])["id"] == event["id"]
