"""Discover sources and sinks through Python entry points.

Built-ins register in our own pyproject exactly as a third-party package would, so the
component interface stays honest: a new sink is one module, one config model, one line.
Discovery also registers each component's `secret_patterns` for redaction.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import TypeVar

from bridge.components import ComponentConfig
from bridge.secrets import register_shapes
from bridge.sinks.base import SinkConfig
from bridge.sources.base import SourceConfig

C = TypeVar("C", bound=ComponentConfig)
SOURCE_GROUP = "bridge.sources"
SINK_GROUP = "bridge.sinks"


class PluginError(Exception):
    """An entry point could not be loaded or does not name a config model of the right kind."""


# Entry points that failed to import, by "group:name": shown when a config asks for them.
load_errors: dict[str, str] = {}


def _load(group: str, base: type[C]) -> dict[str, type[C]]:
    found: dict[str, type[C]] = {}
    for ep in entry_points(group=group):
        try:
            model = ep.load()
        except (ImportError, AttributeError) as exc:
            load_errors[f"{group}:{ep.name}"] = f"{type(exc).__name__}: {exc}"
            continue
        if not (isinstance(model, type) and issubclass(model, base)):
            raise PluginError(f"entry point {group}:{ep.name} is not a {base.__name__} subclass")
        found[ep.name] = model
        register_shapes(model.secret_patterns)
    return dict(sorted(found.items()))


@cache
def source_types() -> dict[str, type[SourceConfig]]:
    return _load(SOURCE_GROUP, SourceConfig)


@cache
def sink_types() -> dict[str, type[SinkConfig]]:
    return _load(SINK_GROUP, SinkConfig)
