"""A running daemon and another process on one state file: `bridge once` run by hand beside
it. The daemon keeps its scopes' item states in memory between sweeps (bridge/store/kept.py);
what the other process committed must still be what its next sweep starts from."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.daemon.conftest import StartDaemon, Vendor, daemon_config
from tests.support.daemon import DaemonProcess, run_cli
from tests.support.waiting import wait_until


def events(path: Path) -> list[tuple[str, str]]:
    """(type, key) of each event in a file sink's JSON lines."""
    if not path.exists():
        return []
    return [(e["type"], e["key"]) for e in map(json.loads, path.read_text().splitlines()) if e]


async def sweep_now(daemon: DaemonProcess) -> dict[str, object]:
    """A SIGHUP: the reloaded pipeline sweeps at once (the interval is an hour); its line."""
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    return await daemon.wait_log("sweep_done", since=mark, timeout=30)


async def test_what_bridge_once_committed_beside_the_daemon_is_not_told_again(
        tmp_path: Path, vendor: Vendor, start_daemon: StartDaemon) -> None:
    world = vendor.world
    ids = [world.add_finding()["id"] for _ in range(3)]
    sink = tmp_path / "events.jsonl"
    daemon = await start_daemon(daemon_config(tmp_path, vendor, interval=3600))
    await wait_until(lambda: len(events(sink)) == 3, 20, "the first sweep delivered")
    assert (await sweep_now(daemon))["events"] == 0  # the daemon now holds the scope's items

    world.resolve(ids[0])
    code, _, err = await run_cli("once", "--config", str(daemon.config_path),
                                 "--deliver-timeout", "20", timeout=60)
    assert code == 0, err
    assert events(sink)[3:] == [("resolved", ids[0])]

    # The daemon's next sweep starts from the resolution `once` stored, not from the active
    # item it had in memory: nothing to tell, and nothing told twice.
    assert (await sweep_now(daemon))["events"] == 0
    world.reopen(ids[0])
    assert (await sweep_now(daemon))["events"] == 1
    await wait_until(lambda: len(events(sink)) == 5, 20, "the reopening delivered")
    assert events(sink)[4:] == [("reopened", ids[0])]
    assert await daemon.stop() == 0
