"""Several `bridge run` replicas sharing one PostgreSQL: each work unit (a source scope, a sink;
bridge/store/units.py) is owned by one replica at a time through a lease row, and every write
made for a unit is fenced inside its own transaction.

- **Leases** live in the `leases` table with an expiry on the database's clock. The owner renews
  its leases every third of the lease time; a replica that stops renewing (killed, paused,
  cut off) loses them when they expire, and another takes them over with a **new fencing
  token** drawn from a sequence.
- **Fencing**: a sweep's commit (and a sink's failure or dead letter) first checks, in its own
  transaction, that its unit's lease row still names this replica with the token it acquired
  and has not expired, and keeps that row share-locked until it commits. A replica paused past
  its lease (SIGSTOP, a long GC, a partition) that wakes up mid-sweep finds another token there:
  its commit is refused and rolled back, never applied over the new owner's work. A takeover
  waits for a commit that passed the check, so the two never overlap.
- **Spreading**: each replica heartbeats in `replicas`; its share is at most
  ceil(units / live replicas), and it hands units back (those used least recently first)
  while it holds more than that, or more than floor(units / live replicas) while another live
  replica holds fewer; so units spread when replicas join and move when one leaves.
- **Local view**: this replica treats a lease as its own only until a safety margin before the
  database would let it expire (measured from before the renewal was sent, on the monotonic
  clock, which keeps running while a process is stopped), so it stops working on a unit
  before anyone else can start.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge

from bridge.store.base import StoreUnavailableError
from bridge.store.postgres.errors import DRIVER_ERRORS, store_error

if TYPE_CHECKING:
    from bridge.store.postgres.store import PostgresStore

log = structlog.get_logger(__name__)

UNIT_OWNED = Gauge("bridge_unit_owned",
                   "1 while this replica owns the work unit (a source scope or a sink)", ["unit"])
LEASES_LOST = MetricCounter("bridge_leases_lost_total",
                      "Leases this replica lost before handing them back (it stalled or was cut "
                      "off past the lease time)")
FENCED = MetricCounter("bridge_fenced_writes_total",
                 "Writes refused because this replica's lease on their unit had moved on")

MARGIN = 0.25  # of the lease time: stop working on a unit this long before it could move
# A unit counts in the shares while some replica said it can work on it within 10 leases.
_WANTED = "wanted_at > clock_timestamp() - make_interval(secs => $1 * 10)"
# A replica counts as live while it heartbeated within a lease.
_LIVE = "seen_at > clock_timestamp() - make_interval(secs => $1)"


class LeaseLostError(StoreUnavailableError):
    """A write for a unit this replica no longer owns: refused, nothing written. Another
    replica owns the unit now and does (or redoes) the work."""


@dataclass
class _Held:
    token: int
    valid_until: float  # monotonic
    used: float  # monotonic: when the pipeline or a sink worker last asked for it


@dataclass(frozen=True)
class LeaseRow:
    """One unit as `bridge state leases` shows it."""

    unit: str
    owner: str | None
    token: int
    expires_in: float | None  # seconds; negative: expired; None: never owned
    acquired_at: Any


class Leases:
    """This replica's side of the leases (see the module doc). `tick` is one round of
    heartbeat, renewal and balancing; `run` repeats it every third of the lease."""

    def __init__(self, store: PostgresStore, replica: str, lease: float) -> None:
        self.store = store
        self.replica = replica
        self.lease = lease
        self._held: dict[str, _Held] = {}
        self._known: set[str] = set()  # units this replica can work on (registered)
        self._owners: dict[str, str | None] = {}
        self._share = 0
        self._task: asyncio.Task[None] | None = None

    # -- what the pipeline, the outbox and the store ask

    def owns(self, unit: str) -> bool:
        held = self._held.get(unit)
        return held is not None and time.monotonic() < held.valid_until

    def owner_of(self, unit: str) -> str | None:
        return self.replica if self.owns(unit) else self._owners.get(unit)

    def describe(self) -> dict[str, Any]:
        return {"replica": self.replica, "lease": self.lease, "share": self._share,
                "owned": self.held(),
                "owners": {unit: self.owner_of(unit) for unit in sorted(self._known)}}

    def held(self) -> list[str]:
        return sorted(u for u in self._held if self.owns(u))

    async def take(self, unit: str) -> bool:
        if self.owns(unit):
            self._held[unit].used = time.monotonic()
            return True
        if unit not in self._known:
            await self._register([unit])
        self._drop(unit)  # expired locally: only a fresh acquisition counts
        if len(self.held()) >= max(1, self._share):
            return False
        return await self._acquire(unit)

    async def fence(self, conn: asyncpg.Connection, unit: str) -> None:
        """In a write's transaction: refuse it unless this replica still holds `unit` with
        the token it acquired; the lease row stays share-locked until the write commits."""
        held = self._held.get(unit)
        ok = held is not None and await conn.fetchval(
            "SELECT true FROM leases WHERE unit = $1 AND owner = $2 AND token = $3 "
            "AND expires_at > clock_timestamp() FOR SHARE", unit, self.replica, held.token)
        if not ok:
            FENCED.inc()
            owner = await conn.fetchval("SELECT owner FROM leases WHERE unit = $1 AND "
                                        "expires_at > clock_timestamp()", unit)
            self._drop(unit)
            raise LeaseLostError(
                f"{unit} is no longer owned by replica {self.replica} (owner now: "
                f"{owner or 'nobody'}); its write was refused and nothing was written")

    # -- lifecycle

    async def start(self, *, renew: bool = True) -> None:
        await self._heartbeat()
        if renew:
            self._task = asyncio.create_task(self.run(), name="leases")

    async def stop(self) -> None:
        """Hand every lease back (others take them at once instead of after expiry)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        units = list(self._held)
        for unit in units:
            self._drop(unit)
        with contextlib.suppress(*DRIVER_ERRORS, StoreUnavailableError):
            await self.store.run_sql(lambda conn: conn.execute(
                "UPDATE leases SET owner = NULL, expires_at = '-infinity' WHERE owner = $1",
                self.replica))
            await self.store.run_sql(lambda conn: conn.execute(
                "DELETE FROM replicas WHERE id = $1", self.replica))
        if units:
            log.info("leases_released", replica=self.replica, units=units)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.tick()
            except StoreUnavailableError as exc:
                log.warning("lease_renewal_failed", replica=self.replica, error=str(exc),
                            held=self.held())

    async def tick(self) -> None:
        """Heartbeat, renew what is held, then take or hand back units to match the share."""
        await self._heartbeat()
        await self._renew()
        known = sorted(self._known)
        await self.store.run_sql(lambda conn: conn.execute(
            "UPDATE leases SET wanted_at = clock_timestamp() WHERE unit = ANY($1::text[])", known))
        live = [r[0] for r in await self.store.run_sql(lambda conn: conn.fetch(
            f"SELECT id FROM replicas WHERE {_LIVE}", self.lease))]
        rows = await self.store.run_sql(lambda conn: conn.fetch(
            "SELECT unit, CASE WHEN expires_at > clock_timestamp() THEN owner END FROM leases "
            f"WHERE {_WANTED}", self.lease))
        self._owners = {r[0]: r[1] for r in rows if r[1] is not None}
        replicas = max(1, len(live))
        self._share = math.ceil(len(rows) / replicas)
        floor = len(rows) // replicas
        counts = Counter({replica: 0 for replica in live})
        counts.update(self._owners.values())
        # Handed back first: the units used least recently (a scope between its sweeps rather
        # than one being swept, whose commit would then be refused and the sweep redone).
        held = sorted(self.held(), key=lambda u: self._held[u].used, reverse=True)
        surplus = held[self._share:]  # beyond the share
        if not surplus and len(held) > floor and any(counts[r] < floor for r in live):
            surplus = held[-1:]  # someone has less than the least share: make room for it
        if surplus:
            await self._release(surplus)
            return  # not taking anything back in the same round
        # While another replica has less than the least share, take no more than that least
        # share: the units handed back for it are its to take.
        starving = any(counts[r] < floor for r in live if r != self.replica)
        limit = floor if starving else self._share
        for unit in sorted(self._known - set(self._owners)):
            if len(self.held()) >= limit:
                break
            await self._acquire(unit)

    # -- the SQL

    async def _counts(self) -> tuple[int, int]:
        row = await self.store.run_sql(lambda conn: conn.fetchrow(
            f"SELECT (SELECT COUNT(*) FROM leases WHERE {_WANTED}), (SELECT COUNT(*) FROM "
            f"replicas WHERE {_LIVE})",
            self.lease))
        return int(row[0]), int(row[1])

    async def _heartbeat(self) -> None:
        await self.store.run_sql(lambda conn: conn.execute(
            "INSERT INTO replicas (id, started_at, seen_at) VALUES ($1, clock_timestamp(), "
            "clock_timestamp()) ON CONFLICT (id) DO UPDATE SET seen_at = clock_timestamp()",
            self.replica))
        # Replicas gone for a while are forgotten (their leases expired long ago).
        await self.store.run_sql(lambda conn: conn.execute(
            "DELETE FROM replicas WHERE seen_at < clock_timestamp() - make_interval(secs => $1)",
            self.lease * 10))

    async def _register(self, units: list[str]) -> None:
        await self.store.run_sql(lambda conn: conn.execute(
            "INSERT INTO leases (unit) SELECT unnest($1::text[]) ON CONFLICT (unit) DO UPDATE "
            "SET wanted_at = clock_timestamp()", units))
        self._known.update(units)
        total, live = await self._counts()  # one more unit: a share of more
        self._share = math.ceil(total / max(1, live))

    async def _acquire(self, unit: str) -> bool:
        started = time.monotonic()
        token = await self.store.run_sql(lambda conn: conn.fetchval(
            "UPDATE leases SET owner = $2, token = nextval('fencing_tokens'), "
            "expires_at = clock_timestamp() + make_interval(secs => $3), "
            "acquired_at = clock_timestamp() WHERE unit = $1 AND (owner IS NULL OR owner = $2 "
            "OR expires_at <= clock_timestamp()) RETURNING token", unit, self.replica,
            self.lease))
        if token is None:
            return False
        self._held[unit] = _Held(int(token), started + self.lease * (1 - MARGIN), time.monotonic())
        self._owners[unit] = self.replica
        UNIT_OWNED.labels(unit).set(1)
        log.info("lease_acquired", replica=self.replica, unit=unit, token=int(token))
        return True

    async def _renew(self) -> None:
        if not self._held:
            return
        started = time.monotonic()
        units = list(self._held)
        tokens = [self._held[u].token for u in units]
        renewed = {r[0] for r in await self.store.run_sql(lambda conn: conn.fetch(
            "UPDATE leases l SET expires_at = clock_timestamp() + make_interval(secs => $4) "
            "FROM unnest($2::text[], $3::bigint[]) AS h (unit, token) WHERE l.unit = h.unit "
            "AND l.token = h.token AND l.owner = $1 AND l.expires_at > clock_timestamp() "
            "RETURNING l.unit", self.replica, units, tokens, self.lease))}
        for unit in units:
            if unit in renewed:
                self._held[unit].valid_until = started + self.lease * (1 - MARGIN)
            else:
                LEASES_LOST.inc()
                log.warning("lease_lost", replica=self.replica, unit=unit,
                            hint="this replica stalled or was cut off past its lease; "
                            "another replica owns the unit now")
                self._drop(unit)

    async def _release(self, units: list[str]) -> None:
        tokens = [self._held[u].token for u in units]
        for unit in units:
            self._drop(unit)
        await self.store.run_sql(lambda conn: conn.execute(
            "UPDATE leases l SET owner = NULL, expires_at = '-infinity' FROM unnest($2::text[], "
            "$3::bigint[]) AS h (unit, token) WHERE l.unit = h.unit AND l.token = h.token "
            "AND l.owner = $1", self.replica, units, tokens))
        log.info("leases_handed_back", replica=self.replica, units=units, share=self._share)

    def _drop(self, unit: str) -> None:
        if self._held.pop(unit, None) is not None:
            UNIT_OWNED.labels(unit).set(0)
            self._owners.pop(unit, None)


async def live_replicas(store: PostgresStore) -> list[str]:
    """The `bridge run` replicas that heartbeated within a lease: alive, or killed less than a
    lease ago (their leases may still be valid)."""
    rows = await store.run_sql(lambda conn: conn.fetch(
        f"SELECT id FROM replicas WHERE {_LIVE} ORDER BY id", store.lease))
    return [r[0] for r in rows]


async def lease_rows(store: PostgresStore) -> list[LeaseRow]:
    """Every unit and who owns it (what `bridge state leases` prints)."""
    rows = await store.run_sql(lambda conn: conn.fetch(
        "SELECT unit, owner, token, CASE WHEN isfinite(expires_at) THEN EXTRACT(EPOCH FROM "
        "(expires_at - clock_timestamp())) END, acquired_at FROM leases ORDER BY unit"))
    return [LeaseRow(r[0], r[1], r[2], None if r[3] is None else float(r[3]), r[4])
            for r in rows]


__all__ = ["DRIVER_ERRORS", "LeaseLostError", "LeaseRow", "Leases", "lease_rows", "live_replicas",
           "store_error"]
