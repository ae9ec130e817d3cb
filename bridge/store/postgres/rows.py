"""The rows one commit writes (item states, outbox rows, muted events), encoded before its
transaction starts and written as one statement per table: each column travels as an array
(`unnest($1::text[], …)`), so a chunk of any size is one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bridge.diff import ItemWrite
from bridge.model import Event
from bridge.store.base import Muted, SilenceRecord, commit_refused, snapshot_severity

MUTED_COLUMNS = ("event_id, type, source, vendor, scope, kind, key, title, severity, "
                  "occurred_at, sink, reason, silence_id")
SILENCE_COLUMNS = ("id, matchers, starts_at, ends_at, author, reason, origin, created_at, "
                    "expired_at, settled_at")


def silence_row(s: SilenceRecord) -> tuple[Any, ...]:
    return (s.id, s.matchers, s.starts_at, s.ends_at, s.author, s.reason, s.origin,
            s.created_at, s.expired_at, s.settled_at)


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column: what `unnest($1::t[], $2::t[], …)` takes, so a batch of
    any size is one statement and one round trip."""
    return [[row[i] for row in rows] for i in range(width)] if rows else [[] for _ in range(width)]


@dataclass(frozen=True, slots=True)
class Rows:
    """Item writes, outbox rows and muted rows, encoded before the transaction starts."""

    scope: str
    full: list[tuple[Any, ...]]
    partial: list[tuple[Any, ...]]
    outbox: list[tuple[str, str, str]]
    muted: list[tuple[Any, ...]]
    now: datetime

    @classmethod
    def of(cls, scope: str, writes: Sequence[ItemWrite],
           deliveries: Sequence[tuple[Event, Sequence[str]]], muted: Sequence[Muted] = ()
           ) -> Rows:
        try:
            outbox = [(sink, e.id, body) for e, sinks in deliveries if sinks
                      for body in (e.to_json(),) for sink in sinks]
        except TypeError as exc:  # orjson's JSONEncodeError: a value JSON cannot hold
            raise commit_refused(scope, f"an event cannot be encoded: {exc}") from exc
        # One row per item and statement (PostgreSQL refuses to upsert a row twice in one
        # statement): the last write of an item wins, as it would written one by one.
        full = {(w.kind, w.key): (w.kind, w.key, w.state, w.tracked, w.counter, w.misses,
                                  w.first_seen, w.changed_at, w.resolved_at, w.snapshot,
                                  snapshot_severity(w.snapshot))
                for w in writes if w.snapshot is not None}
        partial = {(w.kind, w.key): (w.kind, w.key, w.state, w.misses, w.counter, w.changed_at,
                                     w.resolved_at)
                   for w in writes if w.snapshot is None}
        return cls(scope, list(full.values()), list(partial.values()), outbox,
                   [(m.event_id, m.type, m.source, m.vendor, m.scope, m.kind, m.key, m.title,
                     m.severity, m.occurred_at, m.sink, m.reason, m.silence_id) for m in muted],
                   datetime.now(UTC))

    async def write(self, conn: asyncpg.Connection, order_key: int) -> None:
        await self.write_items(conn)
        await self.write_muted(conn)
        await self.write_outbox(conn, order_key)

    async def write_items(self, conn: asyncpg.Connection) -> None:
        if self.full:
            await conn.execute(
                "INSERT INTO items (scope, kind, key, state, tracked, counter, misses, "
                "first_seen, changed_at, resolved_at, snapshot, severity) SELECT $1, * FROM "
                "unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], "
                "$7::bigint[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], "
                "$11::text[], $12::text[]) ON CONFLICT (scope, kind, key) DO UPDATE SET "
                "state = excluded.state, tracked = excluded.tracked, counter = excluded.counter, "
                "misses = excluded.misses, changed_at = excluded.changed_at, "
                "resolved_at = excluded.resolved_at, snapshot = excluded.snapshot, "
                "severity = excluded.severity",
                self.scope, *columns(self.full, 11))
        if self.partial:
            # A miss count is not a change: changed_at moves only when the state does.
            await conn.execute(
                "UPDATE items i SET changed_at = CASE WHEN i.state = w.state THEN i.changed_at "
                "ELSE w.changed_at END, state = w.state, misses = w.misses, counter = w.counter, "
                "resolved_at = COALESCE(w.resolved_at, i.resolved_at) FROM unnest($2::text[], "
                "$3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::timestamptz[], "
                "$8::timestamptz[]) AS w (kind, key, state, misses, counter, changed_at, "
                "resolved_at) WHERE i.scope = $1 AND i.kind = w.kind AND i.key = w.key",
                self.scope, *columns(self.partial, 7))

    async def write_muted(self, conn: asyncpg.Connection) -> None:
        if self.muted:
            await conn.execute(
                f"INSERT INTO muted ({MUTED_COLUMNS}, recorded_at) SELECT {MUTED_COLUMNS}, "
                "$14 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
                "$6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], "
                f"$11::text[], $12::text[], $13::text[]) WITH ORDINALITY AS m ({MUTED_COLUMNS}"
                ", n) ORDER BY n",
                *columns(self.muted, 13), self.now)

    async def write_outbox(self, conn: asyncpg.Connection, order_key: int) -> None:
        """The outbox rows, numbered in the order given, under the order lock: call it last
        in a transaction, so the lock is held no longer than it takes to commit."""
        if not self.outbox:
            return
        await hold_order_lock(conn, order_key)
        await conn.execute(
            "INSERT INTO outbox (sink, event_id, body, created_at) SELECT o.sink, o.event_id, "
            "o.body, $4 FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY "
            "AS o (sink, event_id, body, n) ORDER BY o.n",
            *columns(self.outbox, 3), self.now)



async def hold_order_lock(conn: asyncpg.Connection, order_key: int) -> None:
    """Take the outbox order lock until this transaction ends: whoever draws outbox sequence
    numbers next waits for this commit (bridge/store/postgres/store.py, the module doc)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", order_key)
