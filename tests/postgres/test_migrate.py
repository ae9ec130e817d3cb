"""`bridge state migrate`: a user moving from one machine (SQLite) to many (PostgreSQL), and
back, keeps their state: items, cursors and sweep logs (no first-sweep storm of re-created
events), the outbox in order with its attempts (no lost pending delivery), dead letters, muted
events, silences and sink references. Real files, the real server, real `bridge` processes."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_config
from bridge.daemon import Daemon
from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld
from bridge.store.base import Muted, SinkRef, Store, StoreError, SweepCommit
from bridge.store.postgres.commands import migrate
from bridge.store.sqlite import SQLiteStore
from tests.conftest import base_config, scanorbit_source
from tests.core._helpers import SCOPE, T0, item, make_event, sweep
from tests.postgres.conftest import delivered
from tests.support.daemon import run_cli
from tests.support.postgres import PgSchema
from tests.support.store_contract import record, run_sweep, silence_record

EVERYTHING = -1


async def portable(store: Store) -> dict[str, Any]:
    """Everything a copy promises to carry, without what each store numbers itself (sequence
    numbers, sweep ids) or stamps at the time of the copy."""
    stats = await store.queue_stats()
    sinks = sorted({s.sink for s in stats} | {"jira", "siem"})
    sweeps = await store.sweeps(limit=EVERYTHING)
    return {
        "items": await store.list_items(limit=EVERYTHING),
        "cursors": {s: await store.load_cursor(s) for s in await store.swept_scopes()},
        "sweeps": sorted(((r.scope, r.outcome, r.started_at, r.items_seen, r.notes, r.error)
                          for r in sweeps), key=repr),
        "outbox": {s: [(d.event, d.attempts) for d in await store.claim(s, EVERYTHING)]
                   for s in sinks},
        "dead": [(d.sink, d.event, d.attempts, d.error, d.summary)
                 for d in await store.dead_letters(limit=EVERYTHING)],
        "stats": [(s.sink, s.depth, s.dead, s.summarised) for s in stats],
        "muted": await store.muted(limit=EVERYTHING),
        "silences": await store.silences(),
        "refs": {s: await store.sink_refs(s, limit=EVERYTHING) for s in sinks},
    }


async def fill(store: Store) -> None:
    """A state with a bit of everything, written the way the daemon writes it."""
    await store.open()
    await run_sweep(store, sweep(item("a"), item("b"), item("c")), sinks=("siem", "jira"),
                    cursor={"scan": "s1"})
    await run_sweep(store, sweep(item("a", severity="critical"), item("b")),
                    now=T0 + timedelta(minutes=5), cursor={"scan": "s2"})
    await run_sweep(store, sweep(item("x"), scope="other"), cursor={"page": "p9"})
    await store.commit_sweep(SweepCommit(record=record("failed", error="401", scope="other")))
    siem = await store.claim("siem", 10)
    await store.ack("siem", [siem[0].seq])
    await store.record_failure("siem", [siem[1].seq], "503")
    await store.record_failure("siem", [siem[1].seq, siem[2].seq], "502")
    jira = await store.claim("jira", 10)
    await store.record_failure("jira", [jira[0].seq], "timeout")
    await store.bury("jira", [jira[0].seq], "400: project is archived")
    await store.bury("jira", [jira[1].seq], "summarised: storm guard", summary="sm-1")
    muted = make_event("m", severity="low")
    await store.commit_chunk(SCOPE, [], [], [Muted.of(muted, "jira", "baseline:summary"),
                                             Muted.of(muted, "siem", "silence", "s-1")])
    await store.add_silence(silence_record("s-1"))
    await store.add_silence(silence_record("s-2", created=T0 + timedelta(hours=1)))
    await store.put_sink_refs([SinkRef("jira", "item-a", "open", '{"key": "SEC-1"}', T0)])
    await store.close()


async def test_state_moves_to_postgres_and_back_whole(tmp_path: Path, pg: PgSchema) -> None:
    await fill(SQLiteStore(tmp_path / "one.db"))
    config = parse_config(base_config(tmp_path, [], state=pg.config()))
    copied = await migrate(config, f"sqlite:{tmp_path / 'one.db'}", "postgres", lambda _: None)
    assert (copied.items, copied.pending, copied.dead) == (4, {"jira": 1, "siem": 4},
                                                           {"jira": 2})
    original = SQLiteStore(tmp_path / "one.db")
    await original.open()
    shared = pg.store()
    await shared.open()
    try:
        expected = await portable(original)
        assert await portable(shared) == expected
    finally:
        await shared.close()
    # And back to one machine: the same state again, in a new file.
    await migrate(config, "postgres", f"sqlite:{tmp_path / 'again.db'}", lambda _: None)
    again = SQLiteStore(tmp_path / "again.db")
    await again.open()
    try:
        assert await portable(again) == expected
    finally:
        await again.close()
        await original.close()


async def test_a_second_copy_into_the_same_store_is_refused(tmp_path: Path,
                                                            pg: PgSchema) -> None:
    await fill(SQLiteStore(tmp_path / "one.db"))
    config = parse_config(base_config(tmp_path, [], state=pg.config()))
    await migrate(config, f"sqlite:{tmp_path / 'one.db'}", "postgres", lambda _: None)
    shared = pg.store()
    await shared.open()
    before = await portable(shared)
    await shared.close()
    with pytest.raises(StoreError, match="holds state already"):
        await migrate(config, f"sqlite:{tmp_path / 'one.db'}", "postgres", lambda _: None)
    await shared.open()
    try:
        assert await portable(shared) == before
    finally:
        await shared.close()


async def test_moving_to_postgres_keeps_pending_deliveries_and_starts_no_storm(
        tmp_path: Path, pg: PgSchema, world: tuple[ScanOrbitWorld, RunningSim]) -> None:
    """One machine swept 5 findings but could not deliver them (its sink's path was a
    directory); after the move, the first run against PostgreSQL delivers exactly those 5 and
    finds nothing new: the copied items are its baseline."""
    w, sim = world
    found = {w.add_finding()["id"] for _ in range(5)}
    events = tmp_path / "events.jsonl"
    events.mkdir()  # the sink cannot write: every event stays queued
    one = parse_config(base_config(tmp_path, [scanorbit_source(sim.url)]))
    assert await Daemon(one).once(deliver_timeout=0.3) == 1  # swept, undelivered
    many = base_config(tmp_path, [scanorbit_source(sim.url)], state=pg.config())
    (tmp_path / "many.yaml").write_text(json.dumps(many))
    state_file = tmp_path / "state" / "bridge.db"
    code, out, err = await run_cli("state", "migrate", "--from", f"sqlite:{state_file}",
                                   "--to", "postgres", "--config", str(tmp_path / "many.yaml"))
    assert code == 0, out + err
    assert "items: 5 in 1 scope(s)" in out and "pending deliveries: events 5" in out
    events.rmdir()
    assert await Daemon(parse_config(many)).once() == 0
    got = delivered(events)
    assert sorted((e["type"], e["key"]) for e in got) == sorted(
        ("new", key) for key in found)
