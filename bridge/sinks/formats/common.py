"""What every format shares: UTF-8 byte budgets, a value as text, the last-resort escape for
control characters, the key=value record that fitting shrinks, and the per-config cache."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from bridge.textsafe import UNSAFE_EXCEPT_TAB_LF_CR, visible_match

Oversize = Literal["truncate", "split"]
# In split mode every part carries `bridgePart=i/n` (JSON: `part`/`parts`) so a receiver can
# reassemble the event.
PART_KEY = "bridgePart"
UNLIMITED = 1 << 30


class FitError(ValueError):
    """The event cannot be made to fit the byte budget (the budget is smaller than its header)."""


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8, without encoding it when it is ASCII (the common case)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits `max_bytes` (whole code points)."""
    if len(text) * 4 <= max_bytes:
        return text
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


def as_text(value: Any) -> str | None:
    """A field value as the text formats carry; None/"" mean "leave the key out"."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def visible_on_wire(text: str) -> str:
    """Control, line-breaking and bidi characters as visible escapes (`\\x1b`, `\\u2028`).

    No format defines an escape for them, yet raw they let a vendor's text forge a second
    event for a receiver that splits on VT/FF/FS/GS/RS/NEL/U+2028 (Python's `splitlines`),
    truncate the message at a NUL in a C-string receiver, or drive the analyst's terminal. The
    formats escape their backslashes before this runs, so `\\x1b` stays unambiguous; a parser
    that does not know the escape shows it as the harmless text it is."""
    return UNSAFE_EXCEPT_TAB_LF_CR.pattern.sub(visible_match, text)


@dataclass(frozen=True, slots=True)
class KvRecord:
    """A CEF/LEEF event before rendering: what fitting shrinks or splits.

    `name` is the one header value that may shrink (CEF's Name; empty for LEEF); the first
    `fixed` pairs identify the event, are repeated in every split part and never shrink.
    Values are unescaped and already within their per-key limits.
    """

    prefix: str
    name: str
    suffix: str
    pairs: tuple[tuple[str, str], ...]
    fixed: int
    sep: str
    escape_name: Callable[[str], str]
    escape_value: Callable[[str], str]

    def render(self) -> str:
        esc = self.escape_value
        body = self.sep.join([f"{k}={esc(v)}" for k, v in self.pairs])
        return f"{self.prefix}{self.escape_name(self.name)}{self.suffix}{body}"


ConfigT = TypeVar("ConfigT")
BuiltT = TypeVar("BuiltT")


class PerConfig(Generic[ConfigT, BuiltT]):
    """`build(config)` cached per config object: configs are frozen and an encoder is compiled
    once for every event of every batch. The config is kept in the entry, so its id cannot be
    reused by another object while the entry lives."""

    def __init__(self, build: Callable[[ConfigT], BuiltT], size: int = 64) -> None:
        self._build = build
        self._size = size
        self._cache: dict[int, tuple[ConfigT, BuiltT]] = {}

    def __call__(self, config: ConfigT) -> BuiltT:
        hit = self._cache.get(id(config))
        if hit is not None and hit[0] is config:
            return hit[1]
        if len(self._cache) >= self._size:
            self._cache.clear()
        built = self._build(config)
        self._cache[id(config)] = (config, built)
        return built
