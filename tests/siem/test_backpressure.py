"""Bounded disk, never silent loss: with the receiver down and a small `max_outbox_events`,
sweeps pause (the vendor is not polled), `/readyz` says why (degraded, still ready), the
metric is 1 and one log line marks it; once the receiver is back, delivery drains the backlog,
sweeps resume, and every finding reaches the receiver exactly once.

A real webhook receiver that is stopped and restarted on its port, the sink workers running as
in the daemon, the ScanOrbit simulator and a SQLite store.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from bridge.config import parse_config
from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld
from bridge.sweep import SweepResult
from tests.conftest import base_config, scanorbit_source
from tests.support.harness import Harness
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

CAP = 5


def paused_metric() -> float | None:
    return REGISTRY.get_sample_value("bridge_sweeps_paused")


async def test_a_full_outbox_pauses_sweeps_and_loses_nothing(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim], receiver: Receiver) -> None:
    world, sim = scanorbit
    port = receiver.port
    config = base_config(tmp_path, [scanorbit_source(sim.url, full_resweep_interval=0)])
    config["state"]["max_outbox_events"] = CAP
    config["sinks"] = [{"name": "hook", "type": "webhook", "url": receiver.url,
                        "backoff_initial": 0.05, "backoff_max": 0.2, "probe_interval": 0.2,
                        "timeout": 5}]
    config["routes"] = {"sinks": ["hook"]}
    await receiver.stop()  # the receiver is down from the start

    async with Harness(parse_config(config)) as h:
        pipeline = h.pipeline
        assert pipeline is not None
        h.health.store_opened(True)
        h.health.config_loaded("bridge.yaml")
        for worker in pipeline.workers.values():
            pipeline.worker_tasks.append(asyncio.create_task(worker.run(pipeline.stop_workers)))
        source = h.source()
        delivered_events: list[SweepResult] = []

        async def sweep() -> SweepResult | None:
            return await pipeline.sweep(source, "scanorbit")

        with capture_logs() as logs:
            for _ in range(3):  # 2 + 2 + 2 events: the third sweep goes past the cap
                world.add_finding()
                world.add_finding()
                result = await sweep()
                assert result is not None and result.record.outcome == "complete"
                delivered_events.append(result)
            world.stats.reset()
            for _ in range(4):  # a long outage: every later turn waits
                world.add_finding()
                assert await sweep() is None
        assert world.stats.requests_total == 0  # the vendor was not polled while paused
        assert [e["event"] for e in logs if e["event"].startswith("sweeps_")] == ["sweeps_paused"]
        assert paused_metric() == 1
        ready, detail = h.health.ready()
        assert ready and detail["status"] == "degraded"
        assert any(r.startswith("sweeps paused: outbox holds 6 undelivered events")
                   and "state.max_outbox_events 5" in r for r in detail["reasons"])
        stats = {q.sink: q for q in await h.store.queue_stats()}
        assert stats["hook"].depth == 6 and stats["hook"].dead == 0

        await receiver.start(port)  # back

        async def waiting() -> int:
            return sum(q.depth for q in await h.store.queue_stats())

        async def drained() -> str | None:
            return "drained" if await waiting() == 0 else None

        await wait_until(drained, timeout=30, what="the backlog delivered and acknowledged")
        assert len(receiver.accepted) == 6
        with capture_logs() as logs:
            resumed = await sweep()
        assert resumed is not None and resumed.record.outcome == "complete"
        assert len(resumed.events) == 4  # what was added during the pause, seen now
        assert [e["event"] for e in logs if e["event"].startswith("sweeps_")] == ["sweeps_resumed"]
        assert paused_metric() == 0
        assert h.health.ready()[1]["status"] == "ready"
        await wait_until(lambda: len(receiver.accepted) >= 10, timeout=30,
                         what="the rest delivered")
    every = [e.id for r in (*delivered_events, resumed) for e in r.events]
    assert sorted(receiver.accepted) == sorted(every)  # each once, none lost
    assert len(set(every)) == 10 == len(world.findings)


async def test_a_disk_under_the_free_space_floor_pauses_sweeps(
        tmp_path: Path, scanorbit: tuple[ScanOrbitWorld, RunningSim]) -> None:
    """No disk here has an exabyte free: every sweep waits, and says why."""
    world, sim = scanorbit
    world.add_finding()
    config = base_config(tmp_path, [scanorbit_source(sim.url)])
    config["state"]["min_free_disk_bytes"] = 10**18
    async with Harness(parse_config(config)) as h:
        assert h.pipeline is not None
        h.health.store_opened(True)
        h.health.config_loaded("bridge.yaml")
        world.stats.reset()
        assert await h.pipeline.sweep(h.source(), "scanorbit") is None
        assert world.stats.requests_total == 0
        ready, detail = h.health.ready()
        assert ready and any("bytes free on the state's disk, under state.min_free_disk_bytes"
                             in r for r in detail["reasons"]), detail["reasons"]
        assert paused_metric() == 1
