"""Three real `bridge run` replicas against one PostgreSQL, sharing three vendor scopes and a
sink through leases, while the vendors change:

- SIGKILL the replica that delivers: its units are taken over within the lease time; nothing
  is lost, nothing resolved falsely, and an event is only ever repeated with its own id (the
  batch that was in flight).
- SIGSTOP a replica in the middle of a sweep, past its lease, then SIGCONT it: another
  replica has swept that scope meanwhile, and the late commit is refused (fenced), not applied.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from bridge.sim.common import RunningSim
from bridge.sim.faults import Fault
from bridge.sim.scanorbit import ScanOrbitWorld, make_app
from bridge.store.postgres.leases import lease_rows
from bridge.store.postgres.store import PostgresStore
from tests.conftest import SIM_SCANORBIT_KEY, base_config, scanorbit_source
from tests.support.daemon import DaemonProcess
from tests.support.postgres import PgSchema
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]
DEADLINE = 60.0  # generous: a healthy run meets each condition within a few seconds
LEASE = 2.0
Vendors = list[tuple[ScanOrbitWorld, RunningSim]]


@pytest.fixture
async def vendors() -> AsyncIterator[Vendors]:
    """Three ScanOrbit organisations, one per source: one scope each."""
    async with AsyncExitStack() as stack:
        found = []
        for seed in range(3):
            world = ScanOrbitWorld(api_keys={SIM_SCANORBIT_KEY}, seed=20 + seed,
                                   rate_limit=100_000)
            sim = await stack.enter_async_context(RunningSim(make_app(world),
                                                             shutdown_timeout=0.2))
            found.append((world, sim))
        yield found


def replica_config(tmp_path: Path, pg: PgSchema, vendors: Vendors, n: int) -> dict[str, Any]:
    sources = [scanorbit_source(sim.url, name=f"so-{i}", interval=1, full_resweep_interval=0,
                                http={"rate_limit_per_minute": 60_000, "backoff_initial": 0.01,
                                      "backoff_max": 0.05, "max_retries": 2, "timeout": 10})
               for i, (_, sim) in enumerate(vendors)]
    cfg = base_config(tmp_path, sources, state=pg.config(lease=LEASE, replica_id=f"r{n}"))
    cfg["log"] = {"format": "json"}
    cfg["sinks"][0].update(batch_size=5, backoff_initial=0.05, backoff_max=0.5)
    return cfg


def delivered(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


async def owners(store: PostgresStore) -> dict[str, str]:
    return {r.unit: r.owner for r in await lease_rows(store)
            if r.owner and r.expires_in is not None and r.expires_in > 0}


def check_ledger(events: list[dict[str, Any]], expected: set[tuple[str, str, str]]) -> None:
    """Lost 0 and false resolved 0 against what the vendors did; a repeat only of an id."""
    got = {(e["scope"], e["type"], e["key"]) for e in events}
    assert expected <= got, f"lost: {expected - got}"
    assert got <= expected, f"never happened upstream: {got - expected}"
    ids_per_event = Counter((e["scope"], e["type"], e["key"], e["counter"]) for e in events)
    distinct = {(e["scope"], e["type"], e["key"], e["counter"]): e["id"] for e in events}
    repeats = sum(n - 1 for n in ids_per_event.values())
    assert all(e["id"] == distinct[(e["scope"], e["type"], e["key"], e["counter"])]
               for e in events)
    assert repeats <= 5, f"{repeats} repeats: more than the one batch in flight"


async def test_three_replicas_fail_over_without_loss_and_fence_a_stalled_one(
        tmp_path: Path, pg: PgSchema, vendors: Vendors) -> None:
    expected: set[tuple[str, str, str]] = set()
    for i, (world, _) in enumerate(vendors):
        for _ in range(3):
            expected.add((f"so-{i}", "new", world.add_finding()["id"]))
    events = tmp_path / "events.jsonl"
    daemons = []
    for n in range(3):
        workdir = tmp_path / f"r{n}"
        workdir.mkdir()
        daemons.append(DaemonProcess(replica_config(tmp_path, pg, vendors, n), workdir,
                                     grace=2))
    for daemon in daemons:
        await daemon.start()
    probe = pg.store(replica="probe")
    await probe.open()
    try:
        await wait_until(lambda: {(e["scope"], e["type"], e["key"])
                                  for e in delivered(events)} >= expected, DEADLINE,
                         "every first sweep delivered")

        async def spread() -> dict[str, str] | None:
            found = await owners(probe)
            return found if len(found) == 4 and len(set(found.values())) == 3 else None

        units = await wait_until(spread, DEADLINE, "4 units spread over the 3 replicas")

        # SIGKILL the replica that delivers; the vendors change meanwhile.
        victim = int(units["sink:events"].removeprefix("r"))
        await daemons[victim].kill()
        for i, (world, _) in enumerate(vendors):
            gone = next(iter(world.findings))
            world.resolve(gone)
            expected.add((f"so-{i}", "resolved", gone))
            expected.add((f"so-{i}", "new", world.add_finding()["id"]))

        async def taken_over() -> bool:
            found = await owners(probe)
            return len(found) == 4 and f"r{victim}" not in found.values()

        await wait_until(taken_over, DEADLINE, "the killed replica's units taken over")
        await wait_until(lambda: {(e["scope"], e["type"], e["key"])
                                  for e in delivered(events)} >= expected, DEADLINE,
                         "the changes delivered by the survivors")

        # SIGSTOP a survivor in the middle of a sweep of a scope it owns, past its lease.
        units = await owners(probe)
        scope_unit = next(u for u, owner in sorted(units.items())
                          if u.startswith("scope:") and owner != f"r{victim}")
        stalled = daemons[int(units[scope_unit].removeprefix("r"))]
        world, _ = vendors[int(scope_unit.removeprefix("scope:so-"))]
        stall = world.faults.add(Fault("timeout", path="findings", delay=1.0))
        await wait_until(lambda: stall.hits > 0, DEADLINE, "the owner's sweep in flight")
        mark = stalled.mark()
        stalled.signal(signal.SIGSTOP)
        expected.add((scope_unit.removeprefix("scope:"), "new", world.add_finding()["id"]))

        async def moved() -> bool:
            return (await owners(probe)).get(scope_unit) not in (None, units[scope_unit])

        try:
            await wait_until(moved, DEADLINE, "the stalled replica's scope taken over")
            await wait_until(lambda: {(e["scope"], e["type"], e["key"])
                                      for e in delivered(events)} >= expected, DEADLINE,
                             "the new finding delivered by the new owner")
        except TimeoutError as exc:
            logs = "\n".join(f"-- r{n}:\n{d.logs()[-3000:]}" for n, d in enumerate(daemons))
            raise AssertionError(f"{exc}; owners {await owners(probe)}; stalled "
                                 f"{units[scope_unit]}\n{logs}") from None
        stalled.signal(signal.SIGCONT)
        # Its sweep of that scope was in flight: its commit is refused (so may be those of
        # other scopes it owned, whose leases expired too).
        await stalled.wait_log(
            "sweep_not_committed", DEADLINE, since=mark,
            where=lambda line: f"{scope_unit} is no longer owned by replica" in str(
                line.get("error")))
        check_ledger(delivered(events), expected)
    finally:
        await probe.close()
        codes = []
        for n, daemon in enumerate(daemons):
            if daemon.proc is not None and daemon.proc.returncode is None:
                daemon.signal(signal.SIGCONT)
                codes.append((n, await daemon.stop()))
    assert all(code == 0 for _, code in codes), [(n, daemons[n].logs()[-2000:])
                                                 for n, code in codes if code]
