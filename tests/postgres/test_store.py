"""What only the PostgreSQL store has, against the real server: migrations under an advisory
lock (replicas starting together), a newer schema refused, an older one upgraded, and outbox
sequence numbers that are commit order when commits run side by side. Everything the `Store`
interface promises is tests/postgres/test_contract.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from bridge.model import Event
from bridge.store.base import StoreCorruptError, StoreUnavailableError, SweepCommit
from bridge.store.postgres.schema import LATEST, migrations, quote_ident
from bridge.store.postgres.store import PostgresStore
from tests.core._helpers import SCOPE, item, make_event, sweep
from tests.support.postgres import PgSchema
from tests.support.store_contract import commit_events, record, run_sweep
from tests.support.waiting import wait_until

GATE = 4242  # the advisory lock a gated commit waits for (see `gate`)


async def test_replicas_starting_together_migrate_once(pg: PgSchema) -> None:
    stores = [pg.store() for _ in range(5)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        async with pg.connection() as conn:
            rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == [v for v, _ in migrations()] and rows[-1][0] == LATEST
        await run_sweep(stores[0], sweep(item("a")))
        assert set(await stores[4].load_items(SCOPE, ["finding"])) == {("finding", "a")}
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_schema_from_a_newer_bridge_is_refused_in_one_line(pg: PgSchema) -> None:
    store = pg.store()
    await store.open()
    await run_sweep(store, sweep(item("a")))
    await store.close()
    async with pg.connection() as conn:
        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", LATEST + 1)
    with pytest.raises(StoreCorruptError) as err:
        await pg.store().open()
    message = str(err.value)
    assert "\n" not in message
    assert f"schema version {LATEST + 1}, newer than this bridge understands ({LATEST})" in message
    assert pg.schema in message
    async with pg.connection() as conn:  # refused without touching it
        assert await conn.fetchval("SELECT COUNT(*) FROM items") == 1


async def test_an_older_schema_is_upgraded_and_keeps_its_rows(pg: PgSchema) -> None:
    """A database left at version 1 (before sink refs) by an older bridge."""
    version, first = migrations()[0]
    async with pg.connection() as conn:
        await conn.execute(f"CREATE SCHEMA {quote_ident(pg.schema)}")
        await conn.execute(first)
        await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                           "applied_at timestamptz NOT NULL DEFAULT now())")
        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        await conn.execute("INSERT INTO cursors VALUES ($1, 'scan', 's9')", SCOPE)
    store = pg.store()
    await store.open()
    try:
        assert await store.load_cursor(SCOPE) == {"scan": "s9"}
        assert await store.sink_refs("jira") == []  # the table of migration 2 is there
    finally:
        await store.close()
    async with pg.connection() as conn:
        assert await conn.fetchval("SELECT MAX(version) FROM schema_migrations") == LATEST


async def test_a_server_that_does_not_answer_is_unavailable_not_corrupt(pg: PgSchema) -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", schema=pg.schema,
                          connect_timeout=2)
    with pytest.raises(StoreUnavailableError) as err:
        await store.open()
    assert "cannot reach the state database postgresql 127.0.0.1:1/test" in str(err.value)


@asynccontextmanager
async def gate(pg: PgSchema, event: Event) -> AsyncIterator[asyncpg.Connection]:
    """Hold up any transaction that writes `event`'s outbox row right after writing it (after
    its sequence number is drawn, before it commits): a trigger in the test's schema waits for
    an advisory lock this connection holds until the block ends. What a slow disk or a busy
    server does to a commit, made certain."""
    async with pg.connection() as conn:
        await conn.execute(f"""
            CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_xact_lock_shared({GATE}); RETURN NEW; END $$;
            CREATE TRIGGER gate AFTER INSERT ON outbox FOR EACH ROW
                WHEN (NEW.event_id = '{event.id}') EXECUTE FUNCTION gate();""")
        await conn.execute("SELECT pg_advisory_lock($1)", GATE)
        try:
            yield conn
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", GATE)


async def held_at_gate(gate_conn: asyncpg.Connection) -> bool:
    """Whether a transaction waits for the gate (a lock `gate_conn` holds): only this test's
    commits can, whatever else runs on the server."""
    found = await gate_conn.fetchval(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))")
    return bool(found == 1)


async def waiting_behind_gate(gate_conn: asyncpg.Connection) -> bool:
    """Whether a transaction waits for one that waits for the gate."""
    found = await gate_conn.fetchval(
        "SELECT COUNT(*) FROM pg_stat_activity b WHERE EXISTS (SELECT 1 FROM pg_stat_activity a "
        "WHERE pg_backend_pid() = ANY(pg_blocking_pids(a.pid)) "
        "AND a.pid = ANY(pg_blocking_pids(b.pid)))")
    return bool(found == 1)


async def test_outbox_numbers_are_commit_order_under_concurrent_commits(pg: PgSchema) -> None:
    """Commit A draws its number and is held up before it commits; commit B starts meanwhile.
    Had B drawn a higher number and committed first, a worker that claimed and acknowledged
    B's row would claim `after=` it and never see A's. B waits instead, and gets the next
    number once A committed: no worker can skip a row."""
    first, second = pg.store(), pg.store()
    await first.open()
    await second.open()
    a, b = make_event("a"), make_event("b")
    try:
        async with gate(pg, a) as conn:
            commit_a = asyncio.create_task(first.commit_sweep(commit_events((a, ["siem"]))))
            await wait_until(lambda: held_at_gate(conn), 10, "commit A held at the gate")
            # A's items, cursor and sweep record are written but, uncommitted, seen by nobody.
            assert await second.sweeps() == [] and await second.claim("siem", 10) == []
            commit_b = asyncio.create_task(second.commit_sweep(commit_events((b, ["siem"]))))


            async def b_waits_or_is_done() -> bool:
                return commit_b.done() or await waiting_behind_gate(conn)

            await wait_until(b_waits_or_is_done, 10, "commit B waiting for A's order lock")
            # Had B committed now, with a number above A's, a worker could skip A's row.
            assert await second.claim("siem", 10) == [] and not commit_b.done()
        await asyncio.gather(commit_a, commit_b)
        claimed = await second.claim("siem", 10)
        assert [d.event.key for d in claimed] == ["a", "b"]
        assert claimed[0].seq < claimed[1].seq
        assert len(await second.sweeps()) == 2
    finally:
        await first.close()
        await second.close()


async def test_many_concurrent_commits_lose_nothing_for_a_worker_claiming_after(
        pg: PgSchema) -> None:
    """Four replicas commit sweeps of their own scopes side by side while one worker claims
    with `after=` its last row and acknowledges as it goes: it sees every event once, and each
    scope's events in the order they were committed."""
    writers = [pg.store() for _ in range(4)]
    reader = pg.store()
    await asyncio.gather(*(s.open() for s in [*writers, reader]))
    done = asyncio.Event()
    seen: list[Event] = []

    async def commit_all(store: PostgresStore, scope: str) -> None:
        for n in range(25):
            events = [make_event(f"{scope}-{n}-{i}", scope=scope) for i in range(3)]
            await store.commit_sweep(SweepCommit(record=record(scope=scope),
                                                 deliveries=[(e, ["siem"]) for e in events]))

    async def worker() -> None:
        after = 0
        while True:
            finished = done.is_set()
            batch = await reader.claim("siem", 7, after=after)
            if batch:
                seen.extend(d.event for d in batch)
                after = batch[-1].seq
                await reader.ack("siem", [d.seq for d in batch])
            elif finished:
                return

    try:
        claiming = asyncio.create_task(worker())
        await asyncio.gather(*(commit_all(s, f"tenant-{i}") for i, s in enumerate(writers)))
        done.set()
        await claiming
        assert len(seen) == len({e.id for e in seen}) == 4 * 25 * 3
        for i in range(4):
            keys = [e.key for e in seen if e.scope == f"tenant-{i}"]
            assert keys == [f"tenant-{i}-{n}-{j}" for n in range(25) for j in range(3)]
        assert await reader.claim("siem", 10) == []
    finally:
        await asyncio.gather(*(s.close() for s in [*writers, reader]))
