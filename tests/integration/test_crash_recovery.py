"""Kill -9 the real daemon process between commit and delivery, and before commit: nothing is
lost, and redelivered events carry the same ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.sim.faults import Fault
from tests.conftest import SimPair, base_config, scanorbit_source
from tests.support.daemon import DaemonProcess
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until


def crash_config(tmp_path: Path, url: str, hook: str) -> dict[str, Any]:
    config = base_config(tmp_path, [scanorbit_source(url, interval=3600, jitter=0,
                                                     full_resweep_interval=0)])
    config["sinks"] = [{"name": "hook", "type": "webhook", "url": hook, "batch_size": 10,
                        "concurrency": 4, "backoff_initial": 0.05, "backoff_max": 0.2,
                        "timeout": 30}]
    config["routes"] = {"sinks": ["hook"]}
    config["log"] = {"format": "json"}
    return config


async def test_kill_between_commit_and_delivery_redelivers_same_ids(
    tmp_path: Path, scanorbit: SimPair, receiver: Receiver
) -> None:
    world, sim = scanorbit
    for _ in range(35):
        world.add_finding()
    receiver.mode = "hang"  # the sweep commits; the first delivery batch never completes
    daemon = await DaemonProcess(crash_config(tmp_path, sim.url, receiver.url), tmp_path).start()
    try:
        await receiver.wait_for(lambda r: len(r.attempts) >= 1, timeout=30)
    finally:
        await daemon.kill()
    in_flight = {a.id for a in receiver.attempts}
    assert receiver.received == []

    receiver.mode = "ok"
    daemon = await DaemonProcess(crash_config(tmp_path, sim.url, receiver.url), tmp_path).start()
    try:
        await receiver.wait_for(lambda r: len(set(r.delivered_ids())) >= 35, timeout=30)
    finally:
        await daemon.kill()
    delivered = receiver.delivered_ids()
    assert len(set(delivered)) == 35, daemon.logs()
    assert in_flight <= set(delivered)  # the interrupted batch came again, same ids
    # Duplicates only for work that was in flight at the crash.
    assert len(delivered) - len(set(delivered)) <= len(in_flight)
    assert {r.body["key"] for r in receiver.received} == set(world.findings)


async def test_kill_during_pagination_replays_the_sweep(
    tmp_path: Path, scanorbit: SimPair, receiver: Receiver
) -> None:
    world, sim = scanorbit
    for _ in range(250):
        world.add_finding()
    stall = world.faults.add(Fault(kind="timeout", path="/findings$", page=2, delay=60, times=1))
    daemon = await DaemonProcess(crash_config(tmp_path, sim.url, receiver.url), tmp_path).start()
    try:
        # The daemon is now stuck mid-sweep: page 1 fetched, nothing committed.
        await wait_until(lambda: stall.hits > 0, 30, "daemon reached page 2")
    finally:
        await daemon.kill()
    assert receiver.attempts == []
    daemon = await DaemonProcess(crash_config(tmp_path, sim.url, receiver.url), tmp_path).start()
    try:
        await receiver.wait_for(lambda r: len(r.received) >= 250, timeout=30)
    finally:
        await daemon.kill()
    assert sorted(receiver.delivered_ids()) == sorted(set(receiver.delivered_ids()))
    assert len(receiver.received) == 250
