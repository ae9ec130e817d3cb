"""A real `bridge run` killed (SIGKILL) while a digest waits for company: the events are in
the outbox, not in the dead process's memory, so the next start sends them as one digest,
each exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld
from tests.conftest import base_config, scanorbit_source
from tests.support.daemon import DaemonProcess
from tests.support.receiver import Receiver

pytestmark = pytest.mark.timeout(90)


def config(tmp_path: Path, vendor: str, hook: str, group_wait: float) -> dict[str, object]:
    return base_config(tmp_path, [scanorbit_source(vendor)], log={"format": "json"},
                       sinks=[{"name": "hook", "type": "webhook", "url": hook,
                               "group_by": ["source"], "group_wait": group_wait,
                               "backoff_initial": 0.05, "backoff_max": 0.2}],
                       routes={"sinks": ["hook"]})


async def test_a_crash_mid_digest_loses_nothing_and_sends_nothing_twice(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim]) -> None:
    world, sim = scanorbit
    ids = {world.add_finding(summary=f"bucket {i} is public", severity="high")["id"]
           for i in range(20)}
    receiver = await Receiver().start()
    try:
        first = await DaemonProcess(config(tmp_path, sim.url, receiver.url, 3600),
                                    tmp_path).start()
        try:
            waiting = await first.wait_log("digests_waiting", timeout=30)
            assert waiting["events"] == 20
        finally:
            await first.kill()
        assert receiver.received == []
        mark = first.mark()  # the log file is shared: read only the second run's lines
        second = await DaemonProcess(config(tmp_path, sim.url, receiver.url, 0.2),
                                     tmp_path).start()
        try:
            await receiver.wait_until(lambda: len(receiver.received) >= 1, timeout=30)
            await second.wait_log("sweep_done", timeout=30, since=mark)  # the same world again
            assert await second.stop() == 0
        finally:
            await second.kill()
    finally:
        await receiver.stop()
    (digest,) = receiver.received
    assert digest.body["type"] == "digest" and digest.body["count"] == 20
    assert {e["key"] for e in digest.body["events"]} == ids
