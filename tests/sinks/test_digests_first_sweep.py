"""A 5,000-finding first sweep into Slack, end to end: a real `bridge once` against the
ScanOrbit simulator, a SQLite state file and two receivers that follow Slack's incoming-webhook
contract. One Slack sink keeps the chat preset's default baseline (one summary message); the
other is sent the sweep item by item by its route (`baseline: deliver`), which also groups it
(`group_by: [severity]`, the sink itself sets no grouping), so its storm guard and digests
carry it: a handful of messages, zero lost, zero per-item floods."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld
from bridge.store.sqlite import SQLiteStore
from tests.conftest import base_config, scanorbit_source
from tests.support.daemon import run_cli
from tests.support.service_receivers import SlackReceiver

pytestmark = pytest.mark.timeout(120)
FINDINGS = 5000
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL")


async def test_a_five_thousand_finding_first_sweep_reaches_slack_as_a_handful_of_messages(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim]) -> None:
    world, sim = scanorbit
    for i in range(FINDINGS):
        world.add_finding(summary=f"bucket {i} is public", severity=SEVERITIES[i % 5])
    digests, baseline = SlackReceiver(), SlackReceiver()
    await digests.start()
    await baseline.start()
    try:
        config = base_config(
            tmp_path, [scanorbit_source(sim.url)],
            sinks=[{"name": "digests", "type": "slack", "webhook_url": digests.url,
                    "timeout": 10},
                   {"name": "baseline", "type": "slack", "webhook_url": baseline.url,
                    "timeout": 10}],
            routes={"routes": [
                {"name": "sweep-in-digests", "sinks": ["digests"], "baseline": "deliver",
                 "group_by": ["severity"], "continue": True},
                {"sinks": ["baseline"]}]})
        path = tmp_path / "bridge.yaml"
        path.write_text(yaml.safe_dump(config))
        code, _, err = await run_cli("once", "--no-progress", "--config", str(path),
                                     timeout=90)
    finally:
        await digests.stop()
        await baseline.stop()
    assert code == 0, err[-2000:]
    assert digests.violations == [] and baseline.violations == []
    # The default: the whole first sweep as one baseline summary.
    (summary,) = [m["text"] for m in baseline.accepted]
    assert f"{FINDINGS} open item(s) recorded as known" in summary
    # Sent item by item: the first minute's budget (60, the chat default) in digests per
    # severity, the rest in one storm summary.
    texts = [m["text"] for m in digests.accepted]
    in_digests = [int(m.group(1)) for t in texts if (m := re.match(r"(\d+) events: ", t))]
    in_summaries = [int(m.group(1)) for t in texts
                    if (m := re.search(r"Event storm: (\d+) events summarised", t))]
    singles = len(texts) - len(in_digests) - len(in_summaries)
    assert len(texts) <= 10, texts  # a handful, not 5,000
    assert in_digests and in_summaries
    assert sum(in_digests) + singles == 60
    assert sum(in_digests) + sum(in_summaries) + singles == FINDINGS  # zero lost
    store = SQLiteStore(tmp_path / "state" / "bridge.db")
    await store.open()
    try:
        carried = await store.dead_letters("digests", limit=10 * FINDINGS, summarised=True)
        stats = {s.sink: s for s in await store.queue_stats()}
    finally:
        await store.close()
    assert len(carried) == FINDINGS - 60 and len({d.event_id for d in carried}) == len(carried)
    assert (stats["digests"].depth, stats["digests"].dead) == (0, 0)
    assert "baseline" not in stats  # nothing left, nothing dead
