"""The source contract: poll one scope, return what was seen and whether it was complete.

A source knows nothing about state, routing or sinks. It reports completeness honestly;
the diff decides what may be resolved.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar, Generic, TypeVar

from pydantic import Field

from bridge.components import ComponentConfig
from bridge.http import HttpConfig, HttpContext
from bridge.model import Item, Sweep


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

    def __init__(self, config: C) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def scopes(self) -> Sequence[str]:
        """State scopes this source sweeps; each is diffed and scheduled on its own."""
        return (self.config.name,)

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
