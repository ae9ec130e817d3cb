"""A real `bridge run` killed with SIGKILL after Jira committed its creates and before the
bridge heard back (the fake Jira holds the answers): the next run finds each ticket by its
dedupe label once the search horizon has passed, and there is exactly one ticket per item."""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
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
    sink = {"name": "jira", "type": "jira", **jira.sink_settings(),
            "search_horizon": 0.5, "timeout": 30, "backoff_initial": 0.05, "backoff_max": 0.2,
            "probe_interval": 0.2}
    return base_config(tmp_path, [scanorbit_source(vendor, baseline="deliver")],
                       log={"format": "json"}, sinks=[sink], routes={"sinks": ["jira"]})


def jira_queue(tmp_path: Path) -> tuple[int, list[str]]:
    """(events waiting for the Jira sink, states of its ledger entries), read from the state
    file while the daemon runs (WAL: a reader never waits)."""
    db = sqlite3.connect(tmp_path / "state" / "bridge.db")
    try:
        (waiting,) = db.execute("SELECT COUNT(*) FROM outbox WHERE sink = 'jira'").fetchone()
        states = [r[0] for r in db.execute("SELECT state FROM sink_refs WHERE sink = 'jira'")]
    finally:
        db.close()
    return waiting, states


async def kill_between_create_and_commit(tmp_path: Path, vendor: str, jira: FakeJira,
                                         env: dict[str, str] | None = None) -> None:
    """Run the bridge until Jira has committed three creates whose answers it holds, kill -9
    it, then run it again until the Jira sink has nothing left to do."""
    first = await DaemonProcess(config(tmp_path, vendor, jira), tmp_path, env=env).start()
    try:
        await wait_until(lambda: jira.created_while_held >= 3, 30,
                         "Jira to commit the creates whose answers it holds")
    finally:
        await first.kill()
    jira.release()  # the killed bridge never hears these answers
    assert len(jira.tickets()) == 3
    second = await DaemonProcess(config(tmp_path, vendor, jira), tmp_path, env=env).start()
    try:
        await wait_until(lambda: jira_queue(tmp_path) == (0, ["ticket"] * 3), 30,
                         "the second run to deliver everything and settle its ledger")
        assert await second.stop() == 0
    finally:
        await second.kill()


@pytest.mark.parametrize("mode", ["cloud", "datacenter"])
async def test_a_kill_between_jiras_create_and_our_commit_leaves_one_ticket_per_item(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim], mode: Mode) -> None:
    world, sim = scanorbit
    for i in range(3):
        world.add_finding(summary=f"bucket {i} is public", severity="high")
    jira = await FakeJira(mode=mode, search_lag=0.2, hold_creates=True).start()
    try:
        await kill_between_create_and_commit(tmp_path, sim.url, jira)
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


MUTANT = textwrap.dedent("""
    import bridge.sinks.jira.ledger as ledger

    async def settle(self, intent, search):  # a ledger that trusts no intent: create again
        return None

    ledger.Ledger.settle = settle
""")


async def test_a_bridge_that_ignores_its_intents_is_caught(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim]) -> None:
    """The same run with the intents ignored (a sitecustomize in the daemon only) must end in
    duplicate tickets: the test above would otherwise prove nothing."""
    world, sim = scanorbit
    for i in range(3):
        world.add_finding(summary=f"bucket {i} is public", severity="high")
    folder = tmp_path / "mutant"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(MUTANT)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(folder),
                                                      os.environ.get("PYTHONPATH", "")) if p)}
    jira = await FakeJira(search_lag=0.2, hold_creates=True).start()
    try:
        await kill_between_create_and_commit(tmp_path, sim.url, jira, env)
    finally:
        await jira.stop()
    labels = [label for t in jira.tickets() for label in t.labels if label != "bridge"]
    assert len(labels) == 6 and len(set(labels)) == 3  # every item ticketed twice
