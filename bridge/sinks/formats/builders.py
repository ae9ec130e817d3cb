"""The per-event work of CEF and LEEF: read the configured fields, escape the values.

A `Spec` says what one key carries; a builder turns a config's specs into a function
`Event -> [prefix, value, prefix, value...]`, each prefix being the separator and `key=` (with a
constant label pair folded in), so that when no value needs escaping, the common case, the body
is a single join. An `Escaper` escapes a value and tells whether a text needs escaping at all.

Each comes twice. The plain ones (`plain_builder`, `PlainEscaper`) are ordinary Python and say
what the output is. The compiled ones (`compiled_builder`, `Escaper`) are what the encoders run:
the same logic written out once per config as straight-line source and `exec`'d (the technique
`dataclasses` uses), reading exactly the configured fields with no per-field dispatch; that is
worth about twice the speed of the plain loop (issue 16: `bench/bench_syslog.py`). The property
tests (tests/syslog/test_builders.py) hold the two byte-identical for any event and config.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Literal, Protocol

from bridge.model import Event
from bridge.sinks.formats.common import UNLIMITED, as_text, truncate_utf8, visible_on_wire
from bridge.sinks.formats.fields import (
    EVENT_FIELDS,
    INT_FIELDS,
    STR_FIELDS,
    Getter,
    change,
    compile_path,
    dig,
)
from bridge.textsafe import UNSAFE_EXCEPT_TAB_LF_CR

Check = Literal["ip", "int"]
TextBuilder = Callable[[Event], list[str]]

_IPV4 = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}",
                   re.ASCII)
_INT = re.compile(r"-?\d{1,18}", re.ASCII)  # CEF's Long, in ASCII digits only


def valid_ip(text: str) -> bool:
    if _IPV4.fullmatch(text):
        return True
    if ":" not in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def valid_int(text: str) -> bool:
    return _INT.fullmatch(text) is not None


_CHECKS: dict[Check, Callable[[str], bool]] = {"ip": valid_ip, "int": valid_int}


@dataclass(frozen=True, slots=True)
class Spec:
    """One key: where its value comes from (the first path with a value), its byte limit, the
    syntax the value must have to be sent at all, a constant label pair sent before it, and
    whether it is sent even when empty (identifiers)."""

    key: str
    paths: tuple[str, ...] = ()
    limit: int = UNLIMITED
    check: Check | None = None
    label: tuple[str, str] | None = None  # (label key, label)
    required: bool = False

    @property
    def value_check(self) -> Check | None:
        """`check`, except for the event's own integers, which are sent as they are."""
        if self.check == "int" and all(p in INT_FIELDS for p in self.paths):
            return None
        return self.check


def text_prefix(spec: Spec, sep: str, escape: Callable[[str], str]) -> str:
    """`SEP [labelKey=label SEP] key=`: what goes before the spec's value, escaped once."""
    label = f"{spec.label[0]}={escape(spec.label[1])}{sep}" if spec.label else ""
    return f"{sep}{label}{spec.key}="


# --- plain ---------------------------------------------------------------------------------------

def _reader(path: str) -> tuple[str, Getter | None]:
    """`(name, None)` for `attributes.name`, read from the event's mapping without a call;
    `("", getter)` otherwise, a C-level `attrgetter` for the event's own fields."""
    compile_path(path)  # validates
    head, _, rest = path.partition(".")
    if head == "attributes":
        return rest, None
    if head in EVENT_FIELDS and not rest:
        return "", attrgetter(head)
    return "", compile_path(path)


def plain_builder(specs: Sequence[Spec], sep: str, escape: Callable[[str], str]) -> TextBuilder:
    """The builder in ordinary Python: one loop over the specs."""
    steps = []
    for spec in specs:
        (name, get), *alternates = [_reader(p) for p in spec.paths]
        check = spec.value_check
        steps.append((name, get, tuple(alternates), spec.required, spec.limit, spec.limit // 4,
                      _CHECKS[check] if check else None, text_prefix(spec, sep, escape)))
    plan = tuple(steps)

    def build(event: Event) -> list[str]:
        attributes = event.attributes
        out: list[str] = []
        for name, get, alternates, required, limit, quarter, check, prefix in plan:
            value = attributes.get(name) if get is None else get(event)
            for other_name, other_get in alternates:  # the first path with a value wins
                if value is not None and value != "":
                    break
                value = attributes.get(other_name) if other_get is None else other_get(event)
            text = value if value.__class__ is str else as_text(value)
            if not text:
                if not required:
                    continue
                text = ""
            # Only a long value, or a non-ASCII one, can be over its byte limit.
            if len(text) > quarter and (len(text) > limit or not text.isascii()):
                text = truncate_utf8(text, limit)
            if check is None or check(text):
                out += (prefix, text)
        return out

    return build


class Escaping(Protocol):
    """What an encoder needs from an escaper (both `Escaper` and `PlainEscaper` are one)."""

    escape: Callable[[str], str]
    needs: Callable[[str], bool]


class PlainEscaper:
    """Per-character escaping in ordinary Python: each pair's character replaced in turn, then
    every control character left made visible (`visible_on_wire`); `needs(text)` says whether
    any character needs escaping."""

    __slots__ = ("escape", "needs")

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        pairs = tuple(pairs)
        chars = [char for char, _ in pairs]
        unsafe = UNSAFE_EXCEPT_TAB_LF_CR.found_in

        def needs(text: str) -> bool:
            return any(map(text.__contains__, chars)) or unsafe(text)

        def escape(text: str) -> str:
            for char, replacement in pairs:
                if char in text:
                    text = text.replace(char, replacement)
            return visible_on_wire(text) if unsafe(text) else text

        self.escape: Callable[[str], str] = escape
        self.needs: Callable[[str], bool] = needs


# --- compiled ------------------------------------------------------------------------------------

# `UNSAFE_EXCEPT_TAB_LF_CR.found_in`, inlined into the compiled escapers (they run on every
# value): false positives (non-ASCII text that is not printable for another reason) only cost a
# no-op substitution.
_UNSAFE_TEST = "((0 in t.encode().translate(_F)) if t.isascii() else not t.isprintable())"


class Escaper:
    """`PlainEscaper` compiled: one C-speed `in` test per special character, since values are
    mostly plain, then the unsafe-character guard (`bridge.textsafe.Unsafe.found_in`)."""

    __slots__ = ("escape", "needs")

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        tests = " or ".join(f"{c!r} in t" for c, _ in pairs)
        steps = "".join(f"    if {c!r} in t: t = t.replace({c!r}, {r!r})\n" for c, r in pairs)
        namespace: dict[str, Any] = {"_visible": visible_on_wire,
                                     "_F": UNSAFE_EXCEPT_TAB_LF_CR.ascii_flags}
        exec(f"def needs(t):\n    return {tests} or {_UNSAFE_TEST}\n"
             f"def escape(t):\n{steps}    if {_UNSAFE_TEST}: t = _visible(t)\n"
             "    return t\n", namespace)
        self.escape: Callable[[str], str] = namespace["escape"]
        self.needs: Callable[[str], bool] = namespace["needs"]


def _expression(path: str) -> tuple[str, bool]:
    """Python source reading `path` from event `e` (attributes bound to `a`); and if it is str."""
    compile_path(path)  # validates
    head, _, rest = path.partition(".")
    if head == "attributes":
        return f"a.get({rest!r})", False
    if head == "raw":
        return f"_dig(e.raw, {tuple(rest.split('.'))!r})", False
    if head == "changes":
        return f"_change(e, {rest!r})", False
    if head == "type":  # a StrEnum, joined as its value (`.value` is a slow descriptor)
        return "e.type", True
    if head in INT_FIELDS:
        return f"str(e.{head})", True
    return f"e.{head}", head in STR_FIELDS


def compiled_builder(specs: Sequence[Spec], sep: str, escape: Callable[[str], str]
                     ) -> TextBuilder:
    """`plain_builder` written out as straight-line source for these specs."""
    lines = ["def build(e):", "    a = e.attributes", "    L = []", "    ap = L.append"]
    for spec in specs:
        exprs = [_expression(p) for p in spec.paths]
        keep = f"ap({text_prefix(spec, sep, escape)!r}); ap(v)"
        lines.append(f"    v = {exprs[0][0]}")
        for expr, _ in exprs[1:]:
            lines.append(f"    if v is None or v == '': v = {expr}")
        if not (len(exprs) == 1 and exprs[0][1]):
            # A missing value (None) stays None, which `_text` would return: no call for
            # the optional fields an event does not have, most of them.
            lines.append("    if v.__class__ is not str and v is not None: v = _text(v)")
        indent = "    "
        if not spec.required:
            lines.append("    if v:")
            indent = "        "
        elif not exprs[0][1] or len(exprs) > 1:
            lines.append("    if v is None: v = ''")
        if spec.limit < UNLIMITED:  # only a long value, or a non-ASCII one, can be too long
            lines.append(f"{indent}if len(v) > {spec.limit // 4} and (len(v) > {spec.limit} or "
                         f"not v.isascii()): v = _trunc(v, {spec.limit})")
        if spec.value_check is not None:
            lines.append(f"{indent}if _valid_{spec.value_check}(v): {keep}")
        else:
            lines.append(f"{indent}{keep}")
    lines.append("    return L")
    namespace: dict[str, Any] = {"_dig": dig, "_change": change, "_text": as_text,
                                 "_trunc": truncate_utf8, "_valid_ip": valid_ip,
                                 "_valid_int": valid_int}
    exec(compile("\n".join(lines), "<bridge.sinks.formats builder>", "exec"), namespace)
    built: TextBuilder = namespace["build"]
    return built


@dataclass(frozen=True, slots=True)
class Implementation:
    """Which builder and escaper an encoder is made of."""

    builder: Callable[[Sequence[Spec], str, Callable[[str], str]], TextBuilder]
    escaper: Callable[[Sequence[tuple[str, str]]], Escaping]


PLAIN = Implementation(plain_builder, PlainEscaper)
COMPILED = Implementation(compiled_builder, Escaper)
