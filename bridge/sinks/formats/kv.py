"""What CEF and LEEF share: a header, then `key=value` pairs joined by a separator, built by a
`TextBuilder` and escaped by the format's `Escaping`; and their fitting under a byte budget."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

from bridge.model import Event
from bridge.sinks.formats.builders import Check, Escaping, Implementation, Spec, text_prefix
from bridge.sinks.formats.common import KvRecord, Oversize, truncate_utf8
from bridge.sinks.formats.fields import FieldMap, paths_of
from bridge.sinks.formats.fit import fit_kv


def field_specs(fields: FieldMap, limit: Callable[[str], int],
                check: Callable[[str], Check | None]) -> list[Spec]:
    """A spec per field-map key, with the format's byte limit and value check for that key."""
    return [Spec(key, paths_of(paths), limit(key), check(key)) for key, paths in fields.items()]


class KvEncoder(ABC):
    """A config compiled once: `encode` for the common case, `record` for fitting."""

    fixed: ClassVar[int]  # how many leading pairs identify the event (never shrunk)

    def __init__(self, specs: Sequence[Spec], sep: str, value: Escaping,
                 escape_name: Callable[[str], str], implementation: Implementation,
                 head: tuple[Callable[[str], str], int, str]) -> None:
        """`head`: the header before the `kind:type` field (made from the event's vendor: the
        device it names, see `bridge.sinks.formats.device`), that field's byte limit, and
        what follows it."""
        self._head = head
        self._heads: dict[tuple[str, str, str], str] = {}
        self._text = implementation.builder(specs, sep, value.escape)
        # Keys are unique, so a prefix names its spec: `pairs` reads the text builder's output.
        self._specs = {text_prefix(spec, sep, value.escape): spec for spec in specs}
        if len(self._specs) != len(specs):
            raise ValueError("two fields with the same key")
        self._needs_escape = value.needs
        self.sep = sep
        self.escape_value = value.escape
        self.escape_name = escape_name

    def head(self, event: Event) -> str:
        """The header up to and with the `kind:type` field: constant per (vendor, kind, type),
        so cached."""
        vendor, kind, etype = event.vendor, event.kind, event.type
        cached = self._heads.get((vendor, kind, etype))
        if cached is None:
            if len(self._heads) > 1024:
                self._heads.clear()
            before, limit, after = self._head
            field = self.escape_name(truncate_utf8(f"{kind}:{etype}", limit))
            cached = self._heads[(vendor, kind, etype)] = f"{before(vendor)}{field}{after}"
        return cached

    def body(self, event: Event) -> str:
        """`SEP key=value...` for the built fields, escaped (note the leading separator)."""
        items = self._text(event)
        values = items[1::2]
        if self._needs_escape("".join(values)):
            items[1::2] = [self.escape_value(v) for v in values]
        return "".join(items)

    def pairs(self, event: Event) -> list[tuple[str, str]]:
        """The built fields as unescaped (key, value) pairs, label pairs included."""
        items = self._text(event)
        out: list[tuple[str, str]] = []
        for prefix, value in zip(items[::2], items[1::2], strict=True):
            spec = self._specs[prefix]
            if spec.label is not None:
                out.append(spec.label)
            out.append((spec.key, str(value)))  # a plain str, not the event's type enum
        return out

    @abstractmethod
    def encode(self, event: Event) -> str:
        """One record: the format's header, then the body."""

    @abstractmethod
    def record(self, event: Event) -> KvRecord:
        """The same record unrendered, for fitting."""

    def fit(self, event: Event, limit: int, oversize: Oversize) -> list[str]:
        """The event in messages of at most `limit` UTF-8 bytes each."""
        return fit_kv(self.record(event), limit, oversize)
