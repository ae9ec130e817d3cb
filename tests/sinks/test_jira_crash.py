"""A real `bridge run` killed with SIGKILL after Jira committed its creates and before the
bridge heard back (the fake Jira holds the answers): the next run finds each ticket by its
dedupe label once the search horizon has passed, and there is exactly one ticket per item."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld
from bridge.store.sqlite import SQLiteStore
from tests.conftest import base_config, scanorbit_source
from tests.support.daemon import DaemonProcess
from tests.support.fake_jira import FakeJira, Mode
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]  # a killed daemon: scheduled first


def config(tmp_path: Path, vendor: str, jira: FakeJira) -> dict[str, Any]:
    auth = ({"email": jira.email, "api_token": jira.token} if jira.mode == "cloud"
            else {"token": jira.token})
    sink = {"name": "jira", "type": "jira", "url": jira.url, "deployment": jira.mode, **auth,
            "project": jira.project,
            "search_horizon": 0.5, "timeout": 30, "backoff_initial": 0.05, "backoff_max": 0.2,
            "probe_interval": 0.2}
    return base_config(tmp_path, [scanorbit_source(vendor, baseline="deliver")],
                       log={"format": "json"}, sinks=[sink], routes={"sinks": ["jira"]})


@pytest.mark.parametrize("mode", ["cloud", "datacenter"])
async def test_a_kill_between_jiras_create_and_our_commit_leaves_one_ticket_per_item(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim], mode: Mode) -> None:
    world, sim = scanorbit
    for i in range(3):
        world.add_finding(summary=f"bucket {i} is public", severity="high")
    jira = await FakeJira(mode=mode, search_lag=0.2, hold_creates=True).start()
    try:
        first = await DaemonProcess(config(tmp_path, sim.url, jira), tmp_path).start()
        try:
            await wait_until(lambda: jira.created_while_held >= 3, 30,
                             "Jira to commit the creates whose answers it holds")
        finally:
            await first.kill()
        jira.release()  # the killed bridge never hears these answers
        assert len(jira.tickets()) == 3
        mark = first.mark()
        second = await DaemonProcess(config(tmp_path, sim.url, jira), tmp_path).start()
        try:
            await wait_until(lambda: len([line for line in second.log_lines(mark)
                                          if line.get("event") == "jira_intent_settled"]) >= 3,
                             30, "the second run to settle the three intents by label search")
            assert await second.stop() == 0
        finally:
            await second.kill()
    finally:
        await jira.stop()
    assert len(jira.tickets()) == 3 and jira.count("POST /rest/api/2/issue") == 3
    labels = {label for t in jira.tickets() for label in t.labels if label != "bridge"}
    assert len(labels) == 3  # one ticket per item
    store = SQLiteStore(tmp_path / "state" / "bridge.db")
    await store.open()
    try:
        refs = await store.sink_refs("jira")
    finally:
        await store.close()
    assert sorted(r.state for r in refs) == ["ticket"] * 3
    # The ledger names each ticket Jira holds, under the item its label was made from.
    assert {(r.key, json.loads(r.value)["key"]) for r in refs} == {
        (label.removeprefix("bridge-"), t.key) for t in jira.tickets() for label in t.labels
        if label != "bridge"}
    searches = sum(n for route, n in jira.requests.items() if "/search" in route)
    assert searches >= 3  # each intent was settled by its label, not by a second create
    assert jira.violations == []
