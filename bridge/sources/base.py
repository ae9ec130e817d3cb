"""The source contract: poll one scope, return what was seen and whether it was complete.

A source knows nothing about state, routing or sinks. It reports completeness honestly;
the diff decides what may be resolved.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import ClassVar, Generic, TypeVar

from pydantic import Field

from bridge.components import ComponentConfig
from bridge.http import HttpConfig, HttpContext
from bridge.model import Item, Sweep


ItemSink = Callable[[Sequence[Item]], Awaitable[None]]


class SourceConfig(ComponentConfig):
    """Scheduling and diff policy every source shares; subclasses add `type` and vendor settings."""

    interval: float = Field(default=300.0, ge=1.0, description="seconds between polls")
    jitter: float = Field(default=10.0, ge=0.0, description="random delay added to each poll")
    resolve_after_misses: int = Field(default=2, ge=1)
    tracked_fields: tuple[str, ...] = ("title", "severity", "status")
    # A label for routing and display (an org or tenant name); items carry it as `tenant`.
    tenant: str = ""
    http: HttpConfig = Field(default_factory=HttpConfig)

    def build(self, http: HttpContext) -> Source:
        raise NotImplementedError(f"{type(self).__name__} does not build a source")


C = TypeVar("C", bound=SourceConfig)


class Source(ABC, Generic[C]):
    """One configured vendor connection, possibly covering several scopes (tenants)."""

    vendor: ClassVar[str]
    # Every item kind this source can produce: the stored state a sweep is diffed against.
    item_kinds: ClassVar[tuple[str, ...]]
    # Per-kind overrides of `tracked_fields`, where a kind changes in its own way.
    kind_tracked_fields: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def __init__(self, config: C) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds this configured instance sweeps (a source may make some optional)."""
        return self.item_kinds

    @property
    def scopes(self) -> Sequence[str]:
        """State scopes this source sweeps; each is diffed and scheduled on its own."""
        return (self.config.name,)

    async def stream(self, scope: str, cursor: Mapping[str, str], emit: ItemSink) -> Sweep:
        """Sweep one scope, handing items to `emit` as pages arrive.

        The returned sweep carries completeness, cursor and notes; its `items` are empty
        because they were emitted. Sources whose sweeps can be huge override this so memory
        stays flat; the default emits a whole `poll` at once.
        """
        sweep = await self.poll(scope, cursor)
        await emit(sweep.items)
        return replace(sweep, items=())

    @abstractmethod
    async def poll(self, scope: str, cursor: Mapping[str, str]) -> Sweep:
        """Sweep one scope.

        Raise `VendorError` when nothing usable came back (bad key, first page failed); return
        a sweep marked incomplete when only part of the answer is trustworthy.
        """

    @property
    def requests(self) -> int:
        """Vendor requests made so far; sweeps report the difference."""
        return 0

    async def enrich(self, scope: str, items: Sequence[Item]) -> Sequence[Item]:
        """Add detail to items seen for the first time (costs requests, so it is bounded)."""
        return items

    async def close(self) -> None:
        """Release HTTP sessions; must not raise."""
