"""A Jira sink whose startup check fails (a priority Jira does not have) in a real `bridge run`:
its /readyz entry says which check and why, before anything is queued for it and while the
other sinks deliver on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld
from tests.conftest import base_config, scanorbit_source
from tests.daemon._http import get
from tests.support.daemon import DaemonProcess
from tests.support.fake_jira import FakeJira
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)
TOKEN = "adm_" + "7" * 32


async def test_a_failing_startup_check_is_named_in_readyz_and_other_sinks_run_on(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim]) -> None:
    world, sim = scanorbit
    world.add_finding(summary="bucket is public", severity="critical")
    jira = await FakeJira(mode="cloud").start()
    events = tmp_path / "events.jsonl"
    config = base_config(
        tmp_path, [scanorbit_source(sim.url, baseline="deliver")], log={"format": "json"},
        admin={"port": 0, "token": TOKEN},
        sinks=[{"name": "events", "type": "file", "path": str(events)},
               {"name": "tickets", "type": "jira", **jira.sink_settings(),
                "priorities": {"critical": "Blocker"}}],
        routes={"sinks": ["events"]})  # nothing is queued for tickets
    daemon = await DaemonProcess(config, tmp_path).start()
    try:
        base = await daemon.admin_url()

        async def readyz() -> dict[str, Any] | None:
            status, body = await get(f"{base}/readyz", TOKEN)
            entry = body.get("sinks", {}).get("tickets", {})
            return body if status == 200 and entry.get("healthy") is False else None

        body = await wait_until(readyz, 30, "/readyz naming the failing Jira check")
        entry = body["sinks"]["tickets"]
        assert entry["state"] == "unreachable"
        assert "priorities failed: no such priority in Jira: critical → 'Blocker'" in entry["error"]
        assert body["ready"] is True and body["status"] == "degraded"  # the rest runs on
        await wait_until(lambda: events.exists() and events.read_text().count("\n") >= 1, 30,
                         "the file sink to deliver")
        assert body["sinks"]["events"]["healthy"] is True
        assert jira.tickets() == []
        assert any(line.get("event") == "jira_check" and line.get("check") == "priorities"
                   and line.get("ok") is False for line in daemon.log_lines())
    finally:
        await daemon.kill()
        await jira.stop()
