"""Drive a pipeline one sweep at a time against real HTTP and a real SQLite file."""

from __future__ import annotations

from bridge.config import BridgeConfig
from bridge.health import Health
from bridge.pipeline import Pipeline
from bridge.sources.base import Source, SourceConfig
from bridge.sweep import SweepResult


class Harness:
    """The sources of one config and one store; each `sweep()` is one scheduled sweep."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.store = config.state.build()
        self.health = Health()
        self.pipeline: Pipeline | None = None

    async def __aenter__(self) -> Harness:
        await self.store.open()
        self.pipeline = Pipeline.build(self.config, self.store, self.health)
        self.pipeline.keep_events = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.pipeline is not None
        await self.pipeline.stop(1.0)
        await self.store.close()

    def source(self, name: str | None = None) -> Source[SourceConfig]:
        assert self.pipeline is not None
        sources = self.pipeline.sources
        return sources[name] if name is not None else next(iter(sources.values()))

    async def sweep(self, scope: str | None = None, *, source: str | None = None) -> SweepResult:
        """Sweep `scope` (default: the first scope of the first, or the named, source)."""
        assert self.pipeline is not None
        src = self.source(source)
        result = await self.pipeline.sweep(src, scope or src.scopes[0])
        assert result is not None
        return result

    async def deliver(self) -> dict[str, int]:
        assert self.pipeline is not None
        return await self.pipeline.drain(10.0)
