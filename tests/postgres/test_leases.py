"""Replicas sharing one PostgreSQL through leases (bridge/store/postgres/leases.py), store by
store against the real server: units spread over the replicas and move when one leaves, and a
replica that stalled past its lease has its late commit refused while the new owner's lands.
The same with real `bridge run` processes is tests/postgres/test_failover.py. A one-off
`bridge once`, which takes no leases, refuses to run beside replicas."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
import structlog.testing

from bridge.config import parse_config
from bridge.daemon import Daemon
from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld
from bridge.store.base import StoreError
from bridge.store.postgres.commands import leases
from bridge.store.postgres.leases import LeaseLostError, lease_rows
from bridge.store.postgres.store import PostgresStore
from bridge.store.units import scope_unit, sink_unit
from tests.conftest import base_config, scanorbit_source
from tests.core._helpers import SCOPE, item, make_event, sweep
from tests.postgres.conftest import delivered
from tests.support.daemon import run_cli
from tests.support.postgres import PgSchema
from tests.support.store_contract import commit_events, run_sweep
from tests.support.waiting import wait_until

UNITS = [scope_unit(f"tenant-{i}") for i in range(5)] + [sink_unit("siem")]


async def owners(store: PostgresStore) -> Counter[str | None]:
    return Counter(r.owner for r in await lease_rows(store) if r.expires_in and r.expires_in > 0)


async def test_units_spread_over_the_replicas_and_move_when_one_leaves(pg: PgSchema) -> None:
    replicas = [pg.store(replica=f"r{i}", lease=1.5) for i in range(3)]
    for store in replicas:
        await store.open()
        await store.coordinate()
    try:
        async def everyone_takes() -> Counter[str | None]:
            for store in replicas:
                assert store.units is not None
                for unit in UNITS:
                    await store.units.take(unit)
            found = await owners(replicas[0])
            return found if sorted(found.values()) == [2, 2, 2] else Counter()

        # The first to start may take more than its share; the others' heartbeats make it
        # hand the surplus back.
        spread = await wait_until(everyone_takes, 30, "6 units spread 2/2/2")
        assert set(spread) == {"r0", "r1", "r2"}
        await replicas[2].close()  # leaves: hands its leases back at once

        async def two_take_over() -> Counter[str | None]:
            for store in replicas[:2]:
                assert store.units is not None
                for unit in UNITS:
                    await store.units.take(unit)
            found = await owners(replicas[0])
            return found if sorted(found.values()) == [3, 3] else Counter()

        assert set(await wait_until(two_take_over, 30, "6 units on the 2 left")) == {"r0", "r1"}
        # A unit nobody can work on any more (a tenant removed everywhere) stops counting:
        # once it is not wanted for 10 leases, the shares are those of the 6 units left.
        async with pg.connection() as conn:
            await conn.execute("INSERT INTO leases (unit, wanted_at) VALUES ('scope:gone', "
                               "clock_timestamp() - interval '1 minute')")
        assert replicas[0].units is not None
        await replicas[0].units.tick()
        described = replicas[0].units.describe()
        assert described["owners"].keys() == set(UNITS)
        assert (described["share"], len(described["owned"])) == (3, 3)  # 7 units: 4
    finally:
        for store in replicas[:2]:
            await store.close()


async def test_a_replica_stalled_past_its_lease_cannot_commit(pg: PgSchema) -> None:
    """`stalled` takes the scope and never renews (renew=False: what SIGSTOP does to a
    process); once its lease expired `fresh` takes the scope over with a new token. The
    stalled replica's late commit is refused, nothing of it written; the new owner's lands."""
    stalled = pg.store(replica="stalled", lease=1)
    fresh = pg.store(replica="fresh", lease=1)
    await stalled.open()
    await fresh.open()
    try:
        units = await stalled.coordinate(renew=False)
        assert await units.take(scope_unit(SCOPE))
        await run_sweep(stalled, sweep(item("a")))  # while it owns the scope: committed
        taken = await fresh.coordinate(renew=False)
        assert not await taken.take(scope_unit(SCOPE))  # owned, not expired yet
        await wait_until(lambda: taken.take(scope_unit(SCOPE)), 10, "the lease expired")
        (row,) = [r for r in await lease_rows(fresh) if r.unit == scope_unit(SCOPE)]
        assert row.owner == "fresh" and row.token > 1
        before = await stalled.sweeps()
        with pytest.raises(LeaseLostError, match="no longer owned by replica stalled "
                                                 r"\(owner now: fresh\)"):
            await stalled.commit_sweep(commit_events((make_event("late"), ["siem"])))
        with pytest.raises(LeaseLostError):
            await stalled.commit_chunk(SCOPE, [], [(make_event("late"), ["siem"])])
        assert await fresh.sweeps() == before and await fresh.claim("siem", 10) != []
        assert [d.event.key for d in await fresh.claim("siem", 10)] == ["a"]
        await fresh.commit_sweep(commit_events((make_event("b"), ["siem"])))
        assert [d.event.key for d in await fresh.claim("siem", 10)] == ["a", "b"]
        assert not units.owns(scope_unit(SCOPE))
    finally:
        await stalled.close()
        await fresh.close()


async def test_only_the_sink_owner_claims_its_deliveries(pg: PgSchema) -> None:
    first, second = pg.store(replica="one", lease=5), pg.store(replica="two", lease=5)
    await first.open()
    await second.open()
    try:
        await first.commit_sweep(commit_events((make_event("a"), ["siem"])))  # uncoordinated
        await first.coordinate(renew=False)
        await second.coordinate(renew=False)
        claimed = await asyncio.gather(first.claim("siem", 10), second.claim("siem", 10))
        assert sorted(len(c) for c in claimed) == [0, 1]  # exactly one of them delivers
        owner = first if claimed[0] else second
        other = second if owner is first else first
        (delivery,) = claimed[0] or claimed[1]
        with pytest.raises(LeaseLostError):
            await other.record_failure("siem", [delivery.seq], "503")
        with pytest.raises(LeaseLostError):
            await other.bury("siem", [delivery.seq], "400")
        await owner.record_failure("siem", [delivery.seq], "503")
        assert [d.attempts for d in await owner.claim("siem", 10)] == [1]
    finally:
        await first.close()
        await second.close()


async def test_bridge_state_leases_shows_who_owns_what(tmp_path: Path, pg: PgSchema) -> None:
    config = parse_config(base_config(tmp_path, [], state=pg.config()))
    store = pg.store(replica="pod-a", lease=30)
    await store.open()
    try:
        units = await store.coordinate(renew=False)
        assert await units.take(scope_unit("tenant-1"))
        said: list[str] = []
        assert await leases(config, as_json=True, say=said.append) == 0
        (row,) = json.loads(said[0])
        assert (row["unit"], row["owner"]) == ("scope:tenant-1", "pod-a")
        assert 0 < row["expires_in"] <= 30 and row["token"] >= 1
        path = tmp_path / "bridge.yaml"
        path.write_text(json.dumps(base_config(tmp_path, [], state=pg.config())))
        code, out, err = await run_cli("state", "leases", "--config", str(path))
        assert code == 0 and out.startswith("scope:tenant-1  owner=pod-a  token="), out + err
    finally:
        await store.close()
    said.clear()
    await leases(config, say=said.append)
    assert said[0].startswith("scope:tenant-1  owner=(free)")  # handed back on close


async def test_bridge_once_beside_a_running_replica_is_refused_and_does_nothing(
        tmp_path: Path, pg: PgSchema, world: tuple[ScanOrbitWorld, RunningSim]) -> None:
    """A one-off run takes no leases: beside a replica it would sweep and deliver that
    replica's scopes and sinks a second time. It refuses, saying who runs, and touches
    nothing; with the replica gone it runs."""
    w, sim = world
    w.add_finding()
    config = parse_config(base_config(tmp_path, [scanorbit_source(sim.url)], state=pg.config()))
    replica = pg.store(replica="r1")
    await replica.open()
    await replica.coordinate()
    try:
        with structlog.testing.capture_logs() as logs:
            assert await Daemon(config).once() == 1
        (refused,) = [e for e in logs if e["event"] == "once_refused"]
        assert refused["replicas"] == ["r1"] and refused["log_level"] == "error"
        assert (await pg.dump())["items"] == [] and delivered(tmp_path / "events.jsonl") == []
    finally:
        await replica.close()  # a clean stop hands its leases back and leaves the replicas
    assert await Daemon(config).once() == 0
    assert [e["type"] for e in delivered(tmp_path / "events.jsonl")] == ["new"]


async def test_a_replica_stopped_inside_a_transaction_holds_no_one_back(pg: PgSchema) -> None:
    """SIGSTOP can land between a write's statements: the lease row it fenced stays
    share-locked while its session idles in the transaction, and every other replica's
    takeover or lease renewal touching that row would wait on it for good. The server ends
    such a session after a lease (5 s at least), so the unit moves; the stalled write is rolled back, and
    fails when its process resumes. (The stop is the write's own coroutine waiting: what a
    stopped process looks like to the server.)"""
    stalled = pg.store(replica="stalled", lease=1, statement_timeout=15)
    fresh = pg.store(replica="fresh", lease=1, statement_timeout=15)
    await stalled.open()
    await fresh.open()
    fenced, resume = asyncio.Event(), asyncio.Event()

    async def stopped_mid_write(conn: asyncpg.Connection) -> None:
        await units.fence(conn, sink_unit("siem"))
        fenced.set()
        await resume.wait()

    try:
        units = await stalled.coordinate(renew=False)
        assert await units.take(sink_unit("siem"))
        write = asyncio.create_task(stalled._run(stopped_mid_write, tx=True))
        await asyncio.wait_for(fenced.wait(), 10)
        taken = await fresh.coordinate(renew=False)
        await wait_until(lambda: taken.take(sink_unit("siem")), 20,
                         "the stalled replica's sink taken over")
        resume.set()
        with pytest.raises(StoreError):
            await write
    finally:
        resume.set()
        await stalled.close()
        await fresh.close()
