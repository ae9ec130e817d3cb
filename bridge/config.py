"""Load and validate the one YAML config file.

Every error names its YAML path (`routes.routes[2].match.severity: …`) and nothing else: an
operator fixing a config needs the place and the reason, not a traceback. `${VAR}` references
are expanded from the environment while loading; `<secret>_file` keys read secret files; and
`BRIDGE_…` environment variables override settings (pydantic-settings, `__` for nesting).

`load_config_offline` (`bridge check-config --no-env`, Vector's `validate --no-environment`)
checks a file where its secrets are not: every `${VAR}` and every secret `*_file` gets a
placeholder, and `BRIDGE_…` overrides are ignored, so a CI job without production secrets still
validates structure, routes and matchers. Without it a missing variable stays an error.

The file is treated as untrusted input: YAML aliases may not expand it beyond
`MAX_CONFIG_VALUES` values (a 447-byte alias bomb once took a minute and a gigabyte), and every
value taken from the environment is remembered as a secret, wherever it sits, because nobody
knows which of them (`Authorization: "Splunk ${HEC_TOKEN}"`) a receiver will quote back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.admin import AdminConfig
from bridge.logging import LogConfig
from bridge.net import is_loopback
from bridge.plugins import SINK_GROUP, SOURCE_GROUP, load_errors, sink_types, source_types
from bridge.routing import RouteConfig
from bridge.secrets import CONTROL_CHARS, remember
from bridge.silences import SilenceSettings
from bridge.sinks.base import SinkConfig
from bridge.sources.base import SourceConfig
from bridge.store.memory import MemoryStateConfig
from bridge.store.postgres import PostgresStateConfig
from bridge.store.sqlite import SQLiteStateConfig


class ConfigError(Exception):
    """A config that cannot run. `problems` are `path: message` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid configuration\n" + "\n".join(f"  {p}" for p in problems))


def _backend(value: Any) -> str:
    """`backend:` picks the state store; without it, the embedded SQLite default."""
    found = value.get("backend", "sqlite") if isinstance(value, dict) else getattr(
        value, "backend", "sqlite")
    return str(found)


# One config model per state backend, each defined next to its store; a new backend (the
# PostgreSQL issue) adds its model to both.
STATE_BACKENDS = ("sqlite", "memory", "postgres")
StateConfig = Annotated[
    Annotated[SQLiteStateConfig, Tag("sqlite")] | Annotated[MemoryStateConfig, Tag("memory")]
    | Annotated[PostgresStateConfig, Tag("postgres")],
    Discriminator(_backend),
]


class BridgeConfig(BaseSettings):
    """The whole file. Subclassed at load time with the discovered source/sink unions."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    state: StateConfig = Field(default_factory=SQLiteStateConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    sources: list[SourceConfig] = Field(default_factory=list)
    sinks: list[SinkConfig] = Field(default_factory=list)
    routes: RouteConfig = Field(default_factory=RouteConfig)
    silences: SilenceSettings = Field(default_factory=SilenceSettings)

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
# Shorter values from the environment are not redacted: they are ports, levels and flags
# ("info", "9108"), and masking such words in every log line would hide more than it protects.
MIN_ENV_SECRET_LENGTH = 8


# Placeholder for `${VAR}` at `path` (offline checks); None when variables come from `env`.
Placeholder = Callable[[str, str], str]


def _expand(node: Any, path: str, env: Mapping[str, str], problems: list[str],
            placeholder: Placeholder | None = None) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string; a missing variable is a problem.

    A variable's value is stripped of surrounding whitespace (a Kubernetes Secret made with
    `echo key | base64` ends in a newline, which no header can carry), must not contain other
    line breaks or control characters, and is remembered as a secret: the file names it
    instead of spelling it out, and that is the only sign of a secret a `headers:` value has."""
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), env, problems, placeholder)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}[{i}]", env, problems, placeholder) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if placeholder is not None:
                return default if default is not None else placeholder(path, name)
            if name in env:
                value = env[name].strip()
                if CONTROL_CHARS.search(value):
                    problems.append(f"{path}: environment variable {name} contains a line break "
                                    "or another control character")
                    return ""
                if len(value) >= MIN_ENV_SECRET_LENGTH:
                    remember(value)
                return value
            if default is not None:
                return default
            problems.append(f"{path}: environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(sub, node)
    return node


def _secret_problems(node: Any, path: str) -> Iterator[str]:
    """Secrets that cannot go into a header as they are: surrounding whitespace or control
    characters (a literal in the YAML, or a `BRIDGE_…` override, which `_expand` never sees)."""
    if isinstance(node, SecretStr):
        value = node.get_secret_value()
        if value != value.strip() or CONTROL_CHARS.search(value):
            yield (f"{path}: the secret has surrounding whitespace, a line break or another "
                   "control character (a stray newline at the end of a file or variable?)")
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _secret_problems(getattr(node, name), f"{path}.{name}" if path else name)
    elif isinstance(node, list | tuple):
        for i, item in enumerate(node):
            yield from _secret_problems(item, f"{path}[{i}]")
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from _secret_problems(item, f"{path}.{key}")


def plaintext_urls(config: BridgeConfig) -> list[tuple[str, str, str]]:
    """(component, YAML path, host) of every `http://` URL of a source or sink that leaves
    this machine: keys, tokens and findings would cross the network unencrypted."""
    found: list[tuple[str, str, str]] = []
    for label, items in (("sources", config.sources), ("sinks", config.sinks)):
        for i, item in enumerate(items):
            for path, value in _strings(item.model_dump(), f"{label}[{i}]"):
                if value[:7].lower() != "http://":
                    continue
                try:
                    host = urlsplit(value).hostname or ""
                except ValueError:
                    continue  # validation let it through; it will fail loudly when used
                if not is_loopback(host):
                    found.append((item.name, path, host))
    return found


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")


def _unknown_backend(data: Any) -> list[str]:
    state = data.get("state") if isinstance(data, dict) else None
    backend = _backend(state) if isinstance(state, dict) else "sqlite"
    if backend in STATE_BACKENDS:
        return []
    return [f"state.backend: unknown state backend {backend!r} (known: "
            f"{', '.join(STATE_BACKENDS)})"]


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


class _FileOnlyConfig(BridgeConfig):
    """BridgeConfig that ignores `BRIDGE_…` overrides: what an offline check validates."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def config_model(*, environment: bool = True) -> type[BridgeConfig]:
    """BridgeConfig with `sources`/`sinks` typed as unions of every discovered component;
    without `environment`, `BRIDGE_…` overrides are not read."""
    fields: dict[str, Any] = {}
    for field_name, types in (("sources", source_types()), ("sinks", sink_types())):
        if types:
            union = Union[tuple(types.values())]  # type: ignore[valid-type]  # noqa: UP007
            fields[field_name] = (list[Annotated[union, Field(discriminator="type")]],  # type: ignore[valid-type]
                                  Field(default_factory=list))
    base: type[BridgeConfig] = BridgeConfig if environment else _FileOnlyConfig
    model: type[BridgeConfig] = create_model("BridgeConfig", __base__=base, **fields)
    return model


def _root_problems(data: Any) -> list[str]:
    if not isinstance(data, dict):
        return ["<root>: expected a mapping of settings"]
    return [f"<root>: setting names are text, not {key!r} (YAML reads `on:`, "
            "`yes:`, `1:` or `~:` as other types; quote the name)"
            for key in data if not isinstance(key, str)]


def _component_problems(data: Any) -> list[str]:
    return (_unknown_type_hint(SOURCE_GROUP, data, "sources")
            + _unknown_type_hint(SINK_GROUP, data, "sinks") + _unknown_backend(data))


def _validate(model: type[BridgeConfig], data: dict[str, Any]
              ) -> tuple[BridgeConfig | None, list[tuple[str, str]]]:
    """The config, or (YAML path, message) for each problem ("" when the message names its
    paths itself, as the cross checks do)."""
    try:
        config = model(**data)
    except ValidationError as exc:
        found: list[tuple[str, str]] = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "value_error" and err["loc"] == ():
                found.extend(("", line) for line in msg.split("\n"))  # _cross_checks
            else:
                found.append((_format_loc(tuple(err["loc"]), data), msg))
        return None, found
    return config, [(path, msg) for path, msg in _secret_paths(config)]


def _secret_paths(config: BridgeConfig) -> Iterator[tuple[str, str]]:
    for line in _secret_problems(config, ""):
        path, _, msg = line.partition(": ")
        yield path, msg


def _lines(found: list[tuple[str, str]]) -> list[str]:
    return [f"{path}: {msg}" if path else msg for path, msg in found]


def parse_config(data: Any, source: str = "<config>", env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Validate already-parsed YAML; raises `ConfigError` with path-named problems."""
    if data is None:
        data = {}
    problems = _root_problems(data)
    if problems:
        raise ConfigError(source, problems)
    data = _expand(data, "", os.environ if env is None else env, problems)
    problems += _component_problems(data)
    if problems:
        raise ConfigError(source, problems)
    config, found = _validate(config_model(), data)
    if config is None or found:
        raise ConfigError(source, _lines(found))
    return config


# What an offline check puts where a `${VAR}` stands, tried in this order for each place until
# the setting accepts one: a secret (long enough for any token), a URL, a number, a flag, and
# the secrets whose shape is checked (a whsec_ signing secret, a 32-character key).
PLACEHOLDER_SHAPES: tuple[Callable[[str], str], ...] = (
    lambda var: f"placeholder-{var.lower()}-0123456789abcdef",
    lambda var: "https://placeholder.invalid/",
    lambda var: "1",
    lambda var: "true",
    lambda var: "whsec_" + "A" * 43 + "=",  # a Standard Webhooks secret (32 bytes)
    lambda var: "placeholder" + "0" * 21,  # a 32-character key (PagerDuty routing keys)
)


@dataclass(frozen=True)
class OfflineCheck:
    """A config validated without its environment, and where placeholders stood in."""

    config: BridgeConfig
    # "sources[0].api_key: ${SCANORBIT_API_KEY}", "sinks[1].bearer_token: bearer_token_file"
    placeholders: tuple[str, ...] = field(default=())


def parse_config_offline(data: Any, source: str = "<config>") -> OfflineCheck:
    """Validate structure, routes and matchers with placeholders for every secret: each
    `${VAR}` (its `:-default` where it has one) and each secret `<name>_file`. `BRIDGE_…`
    overrides are not read. A placeholder the setting refuses is swapped for the next shape
    (`PLACEHOLDER_SHAPES`), so `url: ${HOOK_URL}` validates as a URL; a setting that accepts
    none is reported, saying which variable it comes from."""
    if data is None:
        data = {}
    problems = _root_problems(data)
    if problems:
        raise ConfigError(source, problems)
    model = config_model(environment=False)
    files: dict[str, str] = {}  # YAML path -> the `*_file(s)` key a placeholder stood in for
    shapes: dict[str, int] = {}
    used: dict[str, str] = {}  # YAML path -> the variable a placeholder stood in for

    def placeholder(path: str, var: str) -> str:
        used[path] = var
        return PLACEHOLDER_SHAPES[shapes.get(path, 0)](var)

    def file_placeholder(path: str, key: str) -> str:
        files[path] = key
        return PLACEHOLDER_SHAPES[shapes.get(path, 0)](key.removesuffix("_file"))

    while True:
        used.clear()
        files.clear()
        expanded = _expand(_placeholder_files(data, (model,), "", file_placeholder), "", {},
                           problems, placeholder)
        problems += _component_problems(expanded)
        if problems:
            raise ConfigError(source, problems)
        config, found = _validate(model, expanded)
        retry = [path for path, _ in found if (path in used or path in files)
                 and shapes.get(path, 0) + 1 < len(PLACEHOLDER_SHAPES)]
        if not retry:
            break
        for path in set(retry):
            shapes[path] = shapes.get(path, 0) + 1
    if config is None or found:
        raise ConfigError(source, [
            f"{path}: {msg} (checked with a placeholder for ${{{used[path]}}})" if path in used
            else f"{path}: {msg} (checked with a placeholder for {files[path]})"
            if path in files else f"{path}: {msg}" if path else msg for path, msg in found])
    return OfflineCheck(config, tuple(
        [f"{path}: ${{{var}}}" for path, var in used.items()]
        + [f"{path}: {key}" for path, key in files.items()]))


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through lists, unions, `Annotated`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models(arg)]


def _placeholder_files(node: Any, models: tuple[type[BaseModel], ...], path: str,
                       placeholder: Placeholder) -> Any:
    """`node` with every `<name>_file` of a secret setting replaced by a placeholder for
    `<name>`, and every `<name>_files` list of a list-of-secrets setting `<name>s`
    (`signing_secret_files` → `signing_secrets`) by one placeholder per file, after the
    secrets given inline. No file is read: it is where the secret lives, which an offline
    check has not got. `models` are the config models `node` may be validated as;
    `placeholder(path, key)` says what stands at `path` for the file(s) of `key`."""
    if isinstance(node, list):
        return [_placeholder_files(v, models, f"{path}[{i}]", placeholder)
                for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[Any, Any] = {}
    for key, value in node.items():
        if key in out:  # `<name>s` already filled, with its `<name>_files` placeholders
            continue
        here = f"{path}.{key}" if path else str(key)
        name = key.removesuffix("_file") if isinstance(key, str) else None
        if (name and name != key and name not in node
                and any(_is_secret(m, name) for m in models)):
            out[name] = placeholder(f"{path}.{name}" if path else name, key)
            continue
        many = key.removesuffix("_files") + "s" if isinstance(key, str) else None
        if (many and key.endswith("_files") and isinstance(value, list)
                and any(_is_secret_list(m, many) for m in models)):
            given = list(out.get(many, node.get(many)) or [])
            field_path = f"{path}.{many}" if path else many
            out[many] = given + [placeholder(f"{field_path}[{len(given) + i}]", key)
                                 for i in range(len(value))]
            continue
        inner = tuple(m for model in models if isinstance(key, str)
                      and (info := model.model_fields.get(key)) is not None
                      for m in _models(info.annotation))
        out[key] = _placeholder_files(value, inner, here, placeholder)
    return out


def _is_secret(model: type[BaseModel], name: str) -> bool:
    info = model.model_fields.get(name)
    return info is not None and info.annotation in (SecretStr, SecretStr | None)


def _is_secret_list(model: type[BaseModel], name: str) -> bool:
    """A `list[SecretStr]` setting (its items may carry validators: `Annotated[SecretStr, …]`)."""
    info = model.model_fields.get(name)
    args = get_args(info.annotation) if info is not None else ()
    return len(args) == 1 and SecretStr in (args[0], *get_args(args[0]))


MAX_CONFIG_VALUES = 100_000  # after alias expansion; a large real config has a few thousand
MAX_CONFIG_DEPTH = 64


class _ConfigShapeError(yaml.YAMLError):
    """A document refused before it is built into Python objects."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


def _where(node: yaml.Node) -> str:
    mark = node.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Count the values the document would have once every alias is copied out (a shared node
    counts once per reference, memoised so the count itself stays linear), refusing cycles,
    more than `MAX_CONFIG_VALUES` values and more than `MAX_CONFIG_DEPTH` levels."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_CONFIG_VALUES:
                raise _ConfigShapeError(_where(node), f"aliases expand this document to more "
                                        f"than {MAX_CONFIG_VALUES} values (an alias bomb?)")
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise _ConfigShapeError(_where(node), "an alias refers to a node that contains it")
        if depth > MAX_CONFIG_DEPTH:
            raise _ConfigShapeError(_where(node), f"nested more than {MAX_CONFIG_DEPTH} levels")
        open_nodes.add(key)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in _children(node))


class BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that checks a composed document with `_check_expansion` before
    building it: PyYAML shares aliased nodes, but everything after it (`${VAR}` expansion,
    validation) copies them out, so a few hundred bytes can otherwise ask for billions."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)


def parse_yaml(text: str, source: str) -> Any:
    """One YAML document, bounded; `ConfigError` with line and column otherwise."""
    try:
        return yaml.load(text, Loader=BoundedLoader)  # BoundedLoader is a SafeLoader
    except _ConfigShapeError as exc:
        raise ConfigError(source, [f"{exc.where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, [f"{where}: YAML syntax: {problem}"]) from None
    except RecursionError:  # PyYAML's composer recurses once per level, before any check
        raise ConfigError(source, [f"<file>: nested more than {MAX_CONFIG_DEPTH} levels"]) from None


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"<file>: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"<file>: not UTF-8 text (byte {exc.start}: "
                                      f"{exc.object[exc.start:exc.start + 1]!r})"]) from None
    return parse_yaml(text, str(path))


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Read, expand and validate a YAML file."""
    path = Path(path)
    return parse_config(_read(path), str(path), env)


def load_config_offline(path: Path | str) -> OfflineCheck:
    """Read and validate a YAML file without its environment (`parse_config_offline`)."""
    path = Path(path)
    return parse_config_offline(_read(path), str(path))
