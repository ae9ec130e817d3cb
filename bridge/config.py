"""Load and validate the one YAML config file.

Every error names its YAML path (`routes.routes[2].match.severity: …`) and nothing else: an
operator fixing a config needs the place and the reason, not a traceback. `${VAR}` references
are expanded from the environment while loading; `<secret>_file` keys read secret files; and
`BRIDGE_…` environment variables override settings (pydantic-settings, `__` for nesting).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, SecretStr, ValidationError, create_model, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.components import SecretFields, StrictModel
from bridge.plugins import SINK_GROUP, SOURCE_GROUP, load_errors, sink_types, source_types
from bridge.routing import RouteConfig
from bridge.sinks.base import SinkConfig
from bridge.sources.base import SourceConfig


class ConfigError(Exception):
    """A config that cannot run. `problems` are `path: message` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid configuration\n" + "\n".join(f"  {p}" for p in problems))


class StateConfig(StrictModel):
    backend: Literal["sqlite"] = "sqlite"
    path: Path = Path("state/bridge.db")


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    # Per-logger levels, e.g. {"bridge.http": "debug"}.
    levels: dict[str, Literal["debug", "info", "warning", "error"]] = Field(default_factory=dict)


class AdminConfig(SecretFields, StrictModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)
    # Bearer token for every endpoint but /healthz; or `token_file` (a mounted secret).
    token: SecretStr | None = None


class BridgeConfig(BaseSettings):
    """The whole file. Subclassed at load time with the discovered source/sink unions."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    state: StateConfig = Field(default_factory=StateConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    sources: list[SourceConfig] = Field(default_factory=list)
    sinks: list[SinkConfig] = Field(default_factory=list)
    routes: RouteConfig = Field(default_factory=RouteConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file: that is how containers override one setting.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _cross_checks(self) -> BridgeConfig:
        problems: list[str] = []
        for label, items in (("sources", self.sources), ("sinks", self.sinks)):
            seen: set[str] = set()
            for i, item in enumerate(items):
                if item.name in seen:
                    problems.append(f"{label}[{i}].name: duplicate name {item.name!r}")
                seen.add(item.name)
        known = {s.name for s in self.sinks}
        for path, sink in self.routes.sink_references("routes"):
            if sink not in known:
                names = ", ".join(sorted(known)) or "none"
                problems.append(f"{path}: unknown sink {sink!r} (known: {names})")
        if problems:
            raise ValueError("\n".join(problems))  # parse_config splits them apart again
        return self

    def sink(self, name: str) -> SinkConfig:
        return next(s for s in self.sinks if s.name == name)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(node: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string; a missing variable is a problem."""
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}[{i}]", env, problems) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{path}: environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(sub, node)
    return node


def _format_loc(loc: tuple[int | str, ...], data: Any) -> str:
    """Turn pydantic's loc into the YAML path, dropping union tags pydantic inserts."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # discriminator tag, not a key in the file
        if part in ("function-after[_cross_checks()]",):
            continue
        out += f".{part}" if out else str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return out or "<root>"


def _unknown_type_hint(group: str, data: Any, field: str) -> list[str]:
    problems: list[str] = []
    known = source_types() if group == SOURCE_GROUP else sink_types()
    entries = data.get(field) if isinstance(data, dict) else None
    for i, entry in enumerate(entries if isinstance(entries, list) else []):  # else: pydantic says
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind is None:
            problems.append(f"{field}[{i}].type: required (one of: {', '.join(known)})")
        elif not isinstance(kind, str) or kind not in known:
            broken = load_errors.get(f"{group}:{kind}")
            why = f" (its module failed to load: {broken})" if broken else ""
            problems.append(
                f"{field}[{i}].type: unknown {field[:-1]} type {kind!r}{why}; "
                f"known: {', '.join(known)}"
            )
    return problems


def config_model() -> type[BridgeConfig]:
    """BridgeConfig with `sources`/`sinks` typed as unions of every discovered component."""
    fields: dict[str, Any] = {}
    for field, types in (("sources", source_types()), ("sinks", sink_types())):
        if types:
            union = Union[tuple(types.values())]  # type: ignore[valid-type]  # noqa: UP007
            fields[field] = (list[Annotated[union, Field(discriminator="type")]],  # type: ignore[valid-type]
                             Field(default_factory=list))
    model: type[BridgeConfig] = create_model("BridgeConfig", __base__=BridgeConfig, **fields)
    return model


def parse_config(data: Any, source: str = "<config>", env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Validate already-parsed YAML; raises `ConfigError` with path-named problems."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["<root>: expected a mapping of settings"])
    problems: list[str] = [f"<root>: setting names are text, not {key!r} (YAML reads `on:`, "
                           "`yes:`, `1:` or `~:` as other types; quote the name)"
                           for key in data if not isinstance(key, str)]
    if problems:
        raise ConfigError(source, problems)
    data = _expand(data, "", os.environ if env is None else env, problems)
    problems += _unknown_type_hint(SOURCE_GROUP, data, "sources")
    problems += _unknown_type_hint(SINK_GROUP, data, "sinks")
    if problems:
        raise ConfigError(source, problems)
    try:
        return config_model()(**data)
    except ValidationError as exc:
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "value_error" and err["loc"] == ():
                problems.extend(msg.split("\n"))  # _cross_checks: already path-named
            else:
                problems.append(f"{_format_loc(tuple(err['loc']), data)}: {msg}")
        raise ConfigError(source, problems) from None


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Read, expand and validate a YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"<file>: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"<file>: not UTF-8 text (byte {exc.start}: "
                                      f"{exc.object[exc.start:exc.start + 1]!r})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(path), [f"{where}: YAML syntax: {problem}"]) from None
    return parse_config(data, str(path), env)
