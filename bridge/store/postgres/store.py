"""The shared store: PostgreSQL through an asyncpg pool, for several replicas and for users
who already run a database they trust.

The same promises as the SQLite store (tests/support/store_contract.py runs against both), with
one thing SQLite gets for free made explicit: **outbox sequence numbers are commit order**.
PostgreSQL draws `bigserial` values when a row is inserted, not when its transaction commits, so
two commits running side by side could make a row visible after a higher-numbered one was
claimed and acknowledged; a worker claiming `after=` that higher number would never see it.
Every transaction that writes outbox rows therefore takes one transaction-scoped advisory lock
(`ORDER_LOCK`) just before drawing them and keeps it until it commits: whoever draws next waits
for that commit, so any number still invisible is larger than every visible one.

A connection that the server dropped (a restart, a failover) fails the call in hand as
`StoreUnavailableError` — a sweep then fails as failed and resolves nothing, a delivery waits
in the outbox — and the pool opens a new one for the next call.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar

import asyncpg

from bridge.diff import ItemWrite, StoredItem, StoredItems
from bridge.model import Event
from bridge.store.base import (
    MUTED_KEPT,
    DeadLetter,
    Delivery,
    ItemRecord,
    Muted,
    MuteReason,
    QueueStats,
    SilenceRecord,
    SinkRef,
    Store,
    StoreError,
    StoreUnavailableError,
    SweepCommit,
    SweepRecord,
    claimed,
    event_or_none,
)
from bridge.store.postgres.config import describe_dsn
from bridge.store.postgres.errors import DRIVER_ERRORS, quiet_driver_tracebacks, store_error
from bridge.store.postgres.leases import Leases, live_replicas
from bridge.store.postgres.rows import (
    MUTED_COLUMNS,
    SILENCE_COLUMNS,
    Rows,
    columns,
    hold_order_lock,
    silence_row,
)
from bridge.store.postgres.schema import migrate, quote_ident
from bridge.store.units import scope_unit, sink_unit

T = TypeVar("T")
Conn: TypeAlias = asyncpg.Connection

# Taken (transaction-scoped) by every transaction that draws outbox sequence numbers.
ORDER_LOCK = "bridge.outbox-order"


def _limit(limit: int) -> int | None:
    """SQL's LIMIT as every store reads it: a negative one is no limit."""
    return None if limit < 0 else limit


class PostgresStore(Store):
    def __init__(self, dsn: str, *, schema: str = "bridge", pool_min: int = 1,
                 pool_max: int = 10, statement_timeout: float = 30.0,
                 connect_timeout: float = 10.0, lease: float = 15.0,
                 replica: str | None = None) -> None:
        self.dsn = dsn
        self.schema = schema
        self.where = f"{describe_dsn(dsn)} schema {schema}"
        self._pool_min, self._pool_max = pool_min, pool_max
        self._statement_ms = max(1, round(statement_timeout * 1000))
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._order_key = 0
        self.lease = lease
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}"
        # Set by `coordinate` (only `bridge run` shares the work): None, and this process
        # owns every unit.
        self.units: Leases | None = None

    # -- lifecycle

    async def connect(self) -> asyncpg.Connection:
        """One connection of its own, outside the pool, set up like the pool's (the leases of
        bridge/store/postgres/units.py hold theirs for as long as they own something)."""
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self.dsn, timeout=self._connect_timeout, server_settings=self._settings())
        except DRIVER_ERRORS as exc:
            raise store_error(f"cannot reach the state database {self.where}: {exc}", exc) from None
        return conn

    def _settings(self) -> dict[str, str]:
        return {"search_path": quote_ident(self.schema),
                "statement_timeout": str(self._statement_ms),
                # A process stopped between a write's statements (SIGSTOP, a stall) keeps its
                # session idle in the transaction, and the lease row it fenced share-locked:
                # every other replica's takeover or renewal touching that row would wait on it
                # for good. The server ends such a session after a lease (5 s at least, for a
                # loaded machine's short pauses), when the replica has lost its units anyway;
                # every write here sends its statements one after the other.
                "idle_in_transaction_session_timeout": str(round(max(5.0, self.lease) * 1000)),
                "application_name": "bridge",
                # The outbox fills and drains within minutes, faster than its statistics
                # follow: with a stale estimate of a few rows the planner reads a whole
                # queue of 100,000 through a bitmap scan and sorts it for every claim of 100
                # (30 ms instead of 0.1). Every statement here is a keyed lookup or an
                # ordered range scan; without bitmap scans the index order is always used.
                "enable_bitmapscan": "off",
                # Acknowledgements and attempt counts (the writes of every delivered batch)
                # do not wait for the WAL to reach the disk: one lost to a server crash means
                # that batch is delivered again, with the same ids, as SQLite's
                # synchronous=NORMAL allows. Every other write is a transaction that turns it
                # back on (`_run(tx=True)`): sweeps, dead letters, silences stay durable.
                "synchronous_commit": "off"}

    async def open(self) -> None:
        quiet_driver_tracebacks()
        conn = await self.connect()
        try:
            await migrate(conn, self.schema, self.where)
            self._order_key = int(await conn.fetchval(
                "SELECT hashtextextended($1, 0)", f"{ORDER_LOCK}:{self.schema}"))
        except DRIVER_ERRORS as exc:
            raise store_error(f"cannot prepare the state database {self.where}: {exc}",
                              exc) from None
        finally:
            await conn.close()
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self._pool_min, max_size=self._pool_max,
                timeout=self._connect_timeout, server_settings=self._settings())
        except DRIVER_ERRORS as exc:
            raise store_error(f"cannot reach the state database {self.where}: {exc}", exc) from None

    async def coordinate(self, *, renew: bool = True) -> Leases:
        """Share the work with the other replicas on this database (bridge/store/postgres/
        leases.py): from now on this store sweeps, delivers and commits only for the units
        it holds a lease on. `renew=False`: no background renewal, the caller runs
        `Leases.tick` itself (a benchmark, a test standing in for a stalled replica)."""
        if self.units is None:
            units = Leases(self, self.replica, self.lease)
            await units.start(renew=renew)
            self.units = units
        return self.units

    async def running_replicas(self) -> list[str]:
        """The `bridge run` replicas working on this database (bridge/store/units.py)."""
        return await live_replicas(self)

    async def close(self) -> None:
        if self.units is not None:
            await self.units.stop()
            self.units = None
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await pool.close()
            except DRIVER_ERRORS:  # the server went away meanwhile: nothing left to close
                pool.terminate()

    async def _run(self, fn: Callable[[Conn], Awaitable[T]], *, tx: bool = False,
                   failing: str = "") -> T:
        """`fn` on a pooled connection (with `tx`: in one durable transaction, committed only
        once on disk); a driver or server error comes out as the StoreError it means, as
        "{failing}: {error}"."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailableError(f"state store {self.where} is not open")
        try:
            async with pool.acquire(timeout=self._connect_timeout) as conn:
                if not tx:
                    return await fn(conn)
                async with conn.transaction():
                    await conn.execute("SET LOCAL synchronous_commit = on")
                    return await fn(conn)
        except StoreError:
            raise
        except DRIVER_ERRORS as exc:
            raise store_error(f"{failing or f'state store {self.where}'}: {exc}", exc) from exc

    async def run_sql(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """`fn` on a pooled connection, errors as StoreErrors (for the leases' own SQL)."""
        return await self._run(fn)

    async def _fence(self, conn: Conn, unit: str) -> None:
        """Inside a write's transaction: refused unless this replica still owns `unit`."""
        if self.units is not None:
            await self.units.fence(conn, unit)

    async def _ordered(self, conn: Conn) -> None:
        """Hold the outbox order lock until this transaction ends (see the module doc)."""
        await hold_order_lock(conn, self._order_key)

    async def order_lock_key(self) -> int:
        """The advisory lock key that orders outbox commits (for tests and operators)."""
        return self._order_key

    # -- sweeps and item state

    async def load_items(self, scope: str, kinds: Collection[str]) -> StoredItems:
        kinds = list(kinds)
        if not kinds:
            return StoredItems()

        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                "SELECT kind, key, state, tracked, counter, misses, first_seen FROM items "
                "WHERE scope = $1 AND kind = ANY($2::text[])", scope, kinds))

        by_kind: dict[str, dict[str, StoredItem]] = {}
        for r in await self._run(q):
            keys = by_kind.get(r[0])
            if keys is None:
                keys = by_kind[r[0]] = {}
            keys[r[1]] = StoredItem(r[0], r[1], r[2], r[3], r[4], r[5], r[6])
        return StoredItems(by_kind)

    async def load_snapshots(self, scope: str, idents: Collection[tuple[str, str]]
                             ) -> dict[tuple[str, str], str]:
        idents = list(idents)
        if not idents:
            return {}

        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                "SELECT i.kind, i.key, i.snapshot FROM items i JOIN unnest($2::text[], "
                "$3::text[]) AS w (kind, key) ON i.kind = w.kind AND i.key = w.key "
                "WHERE i.scope = $1", scope, [k for k, _ in idents], [k for _, k in idents]))

        return {(r[0], r[1]): r[2] for r in await self._run(q)}

    async def load_cursor(self, scope: str) -> dict[str, str]:
        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch("SELECT name, value FROM cursors WHERE scope = $1",
                                         scope))

        return {r[0]: r[1] for r in await self._run(q)}

    async def commit_chunk(self, scope: str, writes: Sequence[ItemWrite],
                           deliveries: Sequence[tuple[Event, Sequence[str]]],
                           muted: Sequence[Muted] = ()) -> None:
        rows = Rows.of(scope, writes, deliveries, muted)

        async def tx(conn: Conn) -> None:
            await self._fence(conn, scope_unit(scope))
            await rows.write(conn, self._order_key)

        await self._run(tx, tx=True, failing=f"state commit failed for {scope}")

    async def commit_sweep(self, commit: SweepCommit) -> int:
        r = commit.record
        rows = Rows.of(r.scope, commit.writes, commit.deliveries, commit.muted)
        names, values = list(commit.cursor), list(commit.cursor.values())

        async def tx(conn: Conn) -> int:
            await self._fence(conn, scope_unit(r.scope))
            await rows.write_items(conn)
            await conn.execute(
                "INSERT INTO cursors (scope, name, value) SELECT $1, n, v FROM "
                "unnest($2::text[], $3::text[]) AS c (n, v) "
                "ON CONFLICT (scope, name) DO UPDATE SET value = excluded.value",
                r.scope, names, values)
            sweep_id: int = await conn.fetchval(
                "INSERT INTO sweeps (scope, source, started_at, finished_at, outcome, "
                "items_seen, events, requests, notes, error) VALUES "
                "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) RETURNING id",
                r.scope, r.source, r.started_at, r.finished_at, r.outcome, r.items_seen,
                r.events, r.requests, json.dumps(list(r.notes)), r.error)
            # The last 1,000 per scope (ids are shared by all scopes: count this scope's).
            await conn.execute(
                "DELETE FROM sweeps WHERE scope = $1 AND id < (SELECT id FROM sweeps "
                "WHERE scope = $1 ORDER BY id DESC LIMIT 1 OFFSET 999)", r.scope)
            await conn.execute(
                "DELETE FROM muted WHERE scope = $1 AND recorded_at < $2 AND (silence_id IS "
                "NULL OR silence_id NOT IN (SELECT id FROM silences WHERE settled_at IS NULL))",
                r.scope, datetime.now(UTC) - MUTED_KEPT)
            await rows.write_muted(conn)
            await rows.write_outbox(conn, self._order_key)  # last: the lock is held to COMMIT
            return sweep_id

        return await self._run(tx, tx=True, failing=f"state commit failed for {r.scope}")

    # -- what was not delivered, and why

    async def muted(self, scope: str | None = None, *, silence_id: str | None = None,
                    reason: MuteReason | None = None, limit: int = 100) -> list[Muted]:
        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                f"SELECT {MUTED_COLUMNS} FROM muted WHERE ($1::text IS NULL OR scope = $1) "
                "AND ($2::text IS NULL OR silence_id = $2) AND ($3::text IS NULL OR "
                "reason = $3) ORDER BY seq DESC LIMIT $4", scope, silence_id, reason,
                _limit(limit)))

        return [Muted(*r) for r in await self._run(q)]

    async def muted_counts(self, scope: str, reason: MuteReason
                           ) -> dict[str, dict[tuple[str, str], int]]:
        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                "SELECT sink, kind, severity, COUNT(*) FROM muted WHERE scope = $1 AND "
                "reason = $2 GROUP BY sink, kind, severity", scope, reason))

        out: dict[str, dict[tuple[str, str], int]] = {}
        for sink, kind, severity, n in await self._run(q):
            out.setdefault(sink, {})[(kind, severity)] = n
        return out

    # -- silences

    async def add_silence(self, silence: SilenceRecord) -> None:
        async def q(conn: Conn) -> None:
            try:
                await conn.execute(
                    f"INSERT INTO silences ({SILENCE_COLUMNS}) VALUES "
                    "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)", *silence_row(silence))
            except asyncpg.UniqueViolationError:
                raise StoreError(f"a silence with id {silence.id} exists already") from None

        await self._run(q, tx=True)

    async def silences(self, *, unsettled: bool = False) -> list[SilenceRecord]:
        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                f"SELECT {SILENCE_COLUMNS} FROM silences WHERE NOT $1 OR settled_at IS NULL "
                "ORDER BY created_at DESC, id", unsettled))

        return [SilenceRecord(*r) for r in await self._run(q)]

    async def expire_silence(self, silence_id: str, at: datetime) -> SilenceRecord | None:
        async def tx(conn: Conn) -> SilenceRecord | None:
            row = await conn.fetchrow(
                f"SELECT {SILENCE_COLUMNS} FROM silences WHERE id = $1 FOR UPDATE", silence_id)
            if row is None:
                return None
            silence = SilenceRecord(*row)
            if silence.ends_at > at:
                silence = replace(silence, ends_at=at, expired_at=at)
                await conn.execute("UPDATE silences SET ends_at = $2, expired_at = $2 "
                                   "WHERE id = $1", silence_id, at)
            return silence

        return await self._run(tx, tx=True)

    async def settle_silence(self, silence_id: str, at: datetime,
                             deliveries: Sequence[tuple[Event, Sequence[str]]],
                             muted: Sequence[Muted] = ()) -> bool:
        rows = Rows.of("silence " + silence_id, [], deliveries, muted)

        async def tx(conn: Conn) -> bool:
            status = await conn.execute("UPDATE silences SET settled_at = $2 WHERE id = $1 "
                                        "AND settled_at IS NULL", silence_id, at)
            if status != "UPDATE 1":
                return False
            await rows.write(conn, self._order_key)
            return True

        return await self._run(tx, tx=True, failing=f"settling silence {silence_id} failed")

    # -- a sink's own references

    async def sink_refs(self, sink: str, keys: Collection[str] | None = None, *,
                        state: str | None = None, limit: int = 100) -> list[SinkRef]:
        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                "SELECT sink, key, state, value, updated_at FROM sink_refs WHERE sink = $1 "
                "AND ($2::text[] IS NULL OR key = ANY($2::text[])) AND ($3::text IS NULL OR "
                "state = $3) ORDER BY key LIMIT $4",
                sink, None if keys is None else sorted(keys), state, _limit(limit)))

        return [SinkRef(*r) for r in await self._run(q)]

    async def put_sink_refs(self, refs: Sequence[SinkRef], *,
                            silence: SilenceRecord | None = None) -> None:
        latest = {(r.sink, r.key): (r.sink, r.key, r.state, r.value, r.updated_at) for r in refs}

        async def tx(conn: Conn) -> None:
            if silence is not None:
                try:
                    async with conn.transaction():  # a savepoint: the error is ours to word
                        await conn.execute(
                            f"INSERT INTO silences ({SILENCE_COLUMNS}) VALUES "
                            "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)", *silence_row(silence))
                except asyncpg.UniqueViolationError:
                    raise StoreError(f"a silence with id {silence.id} exists already") from None
            await conn.execute(
                "INSERT INTO sink_refs (sink, key, state, value, updated_at) SELECT * FROM "
                "unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) "
                "ON CONFLICT (sink, key) DO UPDATE SET state = excluded.state, "
                "value = excluded.value, updated_at = excluded.updated_at",
                *columns(list(latest.values()), 5))

        await self._run(tx, tx=True)

    async def delete_sink_refs(self, sink: str, keys: Collection[str]) -> None:
        async def q(conn: Conn) -> None:
            await conn.execute("DELETE FROM sink_refs WHERE sink = $1 AND key = ANY($2::text[])",
                               sink, list(keys))

        await self._run(q, tx=True)

    # -- outbox

    async def claim(self, sink: str, limit: int, after: int = 0, *,
                    decode: bool = True) -> list[Delivery]:
        if self.units is not None and not await self.units.take(sink_unit(sink)):
            return []  # another replica delivers for this sink
        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                "SELECT seq, attempts, event_id, body FROM outbox WHERE sink = $1 AND seq > $2 "
                "ORDER BY seq LIMIT $3", sink, after, _limit(limit)))

        rows = await self._run(q)
        if not rows:
            return []
        return claimed(sink, [(r[0], r[2], r[3], r[1]) for r in rows], decode=decode)

    async def ack(self, sink: str, seqs: Sequence[int]) -> None:
        async def q(conn: Conn) -> None:
            await conn.execute("DELETE FROM outbox WHERE sink = $1 AND seq = ANY($2::bigint[])",
                               sink, list(seqs))

        await self._run(q)

    async def record_failure(self, sink: str, seqs: Sequence[int], error: str) -> None:
        async def q(conn: Conn) -> None:
            await self._fence(conn, sink_unit(sink))
            await conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = $3 "
                               "WHERE sink = $1 AND seq = ANY($2::bigint[])",
                               sink, list(seqs), error[:2000])

        await self._run(q, tx=self.units is not None)

    async def bury(self, sink: str, seqs: Sequence[int], error: str, *,
                   summary: str | None = None) -> None:
        async def q(conn: Conn) -> None:
            await self._fence(conn, sink_unit(sink))
            # One statement: the rows leave the outbox and become dead letters together.
            await conn.execute(
                "WITH gone AS (DELETE FROM outbox WHERE sink = $1 AND seq = ANY($2::bigint[]) "
                "RETURNING seq, sink, event_id, body, attempts) INSERT INTO dead_letters "
                "(seq, sink, event_id, body, attempts, error, failed_at, summary) SELECT seq, "
                "sink, event_id, body, attempts + 1, $3, $4, $5 FROM gone",
                sink, list(seqs), error[:2000], datetime.now(UTC), summary)

        await self._run(q, tx=True)

    async def dead_letters(self, sink: str | None = None, limit: int = 100, *,
                           summarised: bool | None = None) -> list[DeadLetter]:
        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                "SELECT seq, sink, event_id, body, attempts, error, failed_at, summary FROM "
                "dead_letters WHERE ($1::text IS NULL OR sink = $1) AND ($3::boolean IS NULL "
                "OR (summary IS NOT NULL) = $3) ORDER BY seq LIMIT $2",
                sink, _limit(limit), summarised))

        return [DeadLetter(r[0], r[1], r[2], event_or_none(r[3]), r[4], r[5], r[6], r[7])
                for r in await self._run(q)]

    async def replay(self, sink: str | None = None, seqs: Sequence[int] | None = None, *,
                     summarised: bool | None = False) -> int:
        async def tx(conn: Conn) -> int:
            await self._ordered(conn)
            status: str = await conn.execute(
                "WITH gone AS (DELETE FROM dead_letters WHERE ($1::text IS NULL OR sink = $1) "
                "AND ($2::bigint[] IS NULL OR seq = ANY($2::bigint[])) AND ($4::boolean IS NULL "
                "OR (summary IS NOT NULL) = $4) RETURNING seq, sink, event_id, body) "
                "INSERT INTO outbox (sink, event_id, body, created_at) SELECT sink, event_id, "
                "body, $3 FROM gone ORDER BY seq",
                sink, None if seqs is None else list(seqs), datetime.now(UTC), summarised)
            return int(status.rsplit(" ", 1)[-1])

        return await self._run(tx, tx=True)

    async def queue_stats(self) -> list[QueueStats]:
        async def q(conn: Conn) -> tuple[list[Any], list[Any]]:
            pending = await conn.fetch(
                "SELECT sink, COUNT(*), MIN(created_at) FROM outbox GROUP BY sink")
            dead = await conn.fetch("SELECT sink, summary IS NOT NULL, COUNT(*) FROM "
                                    "dead_letters GROUP BY sink, summary IS NOT NULL")
            return list(pending), list(dead)

        pending_rows, dead_rows = await self._run(q)
        pending = {r[0]: (r[1], r[2]) for r in pending_rows}
        dead: dict[str, int] = {}
        summarised: dict[str, int] = {}
        for sink, carried, n in dead_rows:
            (summarised if carried else dead)[sink] = n
        return [QueueStats(sink, pending.get(sink, (0, None))[0],
                           pending.get(sink, (0, None))[1], dead.get(sink, 0),
                           summarised.get(sink, 0))
                for sink in sorted(set(pending) | set(dead) | set(summarised))]

    # -- inspection

    async def list_items(self, scope: str | None = None, state: str | None = None,
                         limit: int = 100, *, scopes: Collection[str] | None = None,
                         kinds: Collection[str] | None = None, since: datetime | None = None,
                         severities: Collection[str] | None = None) -> list[ItemRecord]:
        def listed(values: Collection[str] | None) -> list[str] | None:
            return None if values is None else sorted(values)

        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                "SELECT scope, kind, key, state, tracked, counter, misses, first_seen, "
                "changed_at, resolved_at, snapshot FROM items WHERE ($1::text IS NULL OR "
                "scope = $1) AND ($2::text IS NULL OR state = $2) AND ($3::text[] IS NULL OR "
                "scope = ANY($3::text[])) AND ($4::text[] IS NULL OR kind = ANY($4::text[])) "
                "AND ($5::timestamptz IS NULL OR changed_at >= $5) AND ($6::text[] IS NULL OR "
                "severity = ANY($6::text[])) ORDER BY changed_at DESC, scope, kind, key "
                "LIMIT $7", scope, state, listed(scopes), listed(kinds), since,
                listed(severities), _limit(limit)))

        return [ItemRecord(*r) for r in await self._run(q)]

    async def item_counts(self) -> list[tuple[str, str, str, int]]:
        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                "SELECT scope, kind, state, COUNT(*) FROM items GROUP BY scope, kind, state"))

        return [(r[0], r[1], r[2], r[3]) for r in await self._run(q)]

    async def sweeps(self, scope: str | None = None, limit: int = 20, *,
                     outcomes: Collection[str] | None = None) -> list[SweepRecord]:
        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                "SELECT id, scope, source, started_at, finished_at, outcome, items_seen, events, "
                "requests, notes, error FROM sweeps WHERE ($1::text IS NULL OR scope = $1) "
                "AND ($2::text[] IS NULL OR outcome = ANY($2::text[])) ORDER BY id DESC LIMIT $3",
                scope, None if outcomes is None else sorted(outcomes), _limit(limit)))

        return [SweepRecord(scope=r[1], source=r[2], started_at=r[3], finished_at=r[4],
                            outcome=r[5], items_seen=r[6], events=r[7], requests=r[8],
                            notes=tuple(json.loads(r[9])), error=r[10], id=r[0])
                for r in await self._run(q)]

    async def swept_scopes(self) -> dict[str, str]:
        async def q(conn: Conn) -> list[Any]:
            return list(await conn.fetch(
                "SELECT DISTINCT ON (scope) scope, source FROM sweeps ORDER BY scope, id DESC"))

        return {r[0]: r[1] for r in await self._run(q)}
