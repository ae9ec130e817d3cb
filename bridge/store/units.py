"""Work units shared by several replicas of the daemon: one per source scope (`scope:NAME`) and
one per sink (`sink:NAME`). A store that coordinates replicas (the PostgreSQL store with
leases, bridge/store/postgres/leases.py) has a `units` attribute keeping this protocol; with
any other store a process owns every unit, as a single replica does.

The pipeline asks before each sweep (`take`); the store itself keeps a replica from delivering
for a sink it does not own and fences every commit, so ownership is enforced where the state
is written, not only where the work is scheduled."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


def scope_unit(scope: str) -> str:
    return f"scope:{scope}"


def sink_unit(sink: str) -> str:
    return f"sink:{sink}"


@runtime_checkable
class UnitOwnership(Protocol):
    replica: str

    async def take(self, unit: str) -> bool:
        """Whether this replica owns `unit` now, acquiring it if it is free and this replica's
        share allows (registering it on first sight)."""

    def owner_of(self, unit: str) -> str | None:
        """The replica that owned `unit` when last looked (None: unknown or free)."""

    def describe(self) -> dict[str, Any]:
        """For /readyz: this replica, the units it owns, and every unit's owner as last seen."""


def ownership_of(store: object) -> UnitOwnership | None:
    """The store's unit ownership, or None where one process owns every unit."""
    units = getattr(store, "units", None)
    return units if isinstance(units, UnitOwnership) else None


async def coordinate(store: object) -> None:
    """Start sharing the work with other replicas where the store can (`bridge run` only: a
    one-off command owns what it touches)."""
    start = getattr(store, "coordinate", None)
    if start is not None:
        await start()


async def running_replicas(store: object) -> list[str]:
    """The replicas sharing the store's work now; none where one process owns every unit. A
    one-off command takes no leases (it owns what it touches): beside them it would sweep and
    deliver their units a second time, unfenced."""
    ask = getattr(store, "running_replicas", None)
    return list(await ask()) if ask is not None else []
