"""Vendor JSON into Python values we can always store: strict and fast first, lenient after.

orjson is strict, and rightly so for our own data, but a vendor answer is not ours. Four things
real vendors send would otherwise turn a whole page into "not valid JSON" (so every later page
of the list goes unread) or crash the sweep later, when the item is stored:

- a lone UTF-16 surrogate (`"…\\ud83d"`, a JavaScript service cutting a string mid-emoji);
- one byte that is not UTF-8 (a Latin-1 name copied in from somewhere);
- a number outside the double range (`1e999`), which orjson refuses to parse;
- nesting deeper than we can write back: orjson parses 1024 levels but serialises only 254,
  and the stored snapshot, the event and its sink formats all wrap the vendor's object.

The fast path is one `msgspec` decode plus a C-speed probe (an `orjson.dumps`). msgspec reads a
page of findings in about 60% of orjson's time; it accepts and refuses exactly what orjson
does, and returns the same values, with one exception: an integer beyond 64 bits stays an
int, where orjson gives the nearest double (which orjson, and so the store, can write back).
The probe refuses such an integer as it refuses nesting deeper than `MAX_DEPTH`, and the body
is then read as before: `orjson.loads`, the same probe, repairs. Only when orjson refuses does
the lenient path run (Python's `json` on the bytes decoded with replacement characters), so a
well-behaved vendor pays nothing for it. What the lenient path repairs: invalid bytes and lone
surrogates become U+FFFD, out-of-range numbers (and `NaN`/`Infinity`) keep their text as a
string, and anything nested deeper than `MAX_DEPTH` is replaced by a marker string. The repairs
are reported, so the client can count and log them; a body that is still not JSON is refused.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

# Containers a vendor answer may nest. Far deeper than any documented payload (ScanOrbit's
# deepest is 4), and 126 levels below orjson's serialisation limit: room for every envelope
# our own records put around a vendor object.
MAX_DEPTH = 128
TOO_DEEP = f"<nested deeper than {MAX_DEPTH} levels: dropped>"
# orjson.dumps refuses containers nested deeper than this.
_ORJSON_DEPTH = 254
_SURROGATE = re.compile("[\ud800-\udfff]")
# Integers orjson returns as int (i64 and u64); anything larger it returns as a float.
_INT_RANGE = range(-(2**63), 2**64)


class Undecodable(ValueError):
    """Not JSON even read leniently."""


@dataclass(frozen=True, slots=True)
class Decoded:
    value: Any
    # What had to be repaired: "invalid_utf8", "lone_surrogate", "number", "too_deep".
    repairs: frozenset[str] = frozenset()


_FAST = msgspec.json.Decoder()


def decode(raw: bytes | bytearray) -> Decoded:
    """The JSON in `raw`, repaired where that is safe; raises `Undecodable` otherwise."""
    try:
        value = _FAST.decode(raw)
    except (msgspec.MsgspecError, RecursionError):
        pass  # not JSON, a number out of range, nesting past the stack: orjson's turn
    else:
        if _fits(value):
            return Decoded(value)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _lenient(raw)
    if _fits(value):
        return Decoded(value)
    repair = _Repair()
    return Decoded(repair.walk(value, 0), frozenset(repair.found))


def _fits(value: Any) -> bool:
    """Whether `value` nests at most `MAX_DEPTH` containers, and holds no integer orjson
    cannot write (beyond 64 bits). Serialising it beneath the levels we do not allow it makes
    orjson check both in C, faster than it parsed it."""
    probe = value
    for _ in range(_ORJSON_DEPTH - MAX_DEPTH):
        probe = [probe]
    try:
        orjson.dumps(probe)
    except orjson.JSONEncodeError:
        return False
    return True


def _lenient(raw: bytes | bytearray) -> Decoded:
    repair = _Repair()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        repair.found.add("invalid_utf8")
    try:
        value = json.loads(text, parse_float=repair.number, parse_int=repair.integer,
                           parse_constant=repair.number)
    except (ValueError, RecursionError) as exc:
        raise Undecodable(f"{type(exc).__name__}: {exc}"[:200]) from None
    return Decoded(repair.walk(value, 0), frozenset(repair.found))


class _Repair:
    """The repairs of one body, and what was repaired."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def number(self, text: str) -> float | str:
        """A double, or the number's own text when no double holds it (`1e999`, `NaN`)."""
        value = float(text)
        if math.isfinite(value):
            return value
        self.found.add("number")
        return text

    def integer(self, text: str) -> int | float | str:
        """As orjson does: an int when it fits 64 bits, else the nearest double."""
        if len(text) <= 21:
            value = int(text)
            if value in _INT_RANGE:
                return value
        return self.number(text)

    def text(self, value: str) -> str:
        if _SURROGATE.search(value) is None:
            return value
        self.found.add("lone_surrogate")
        return _SURROGATE.sub("\ufffd", value)

    def walk(self, value: Any, depth: int) -> Any:
        """`value` (enclosed by `depth` containers) with strings cleaned and depth bounded.
        Recursion stops at `MAX_DEPTH`, so this never nears Python's own recursion limit."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                self.found.add("too_deep")
                return TOO_DEEP
            if isinstance(value, dict):
                return {self.text(k): self.walk(v, depth + 1) for k, v in value.items()}
            return [self.walk(v, depth + 1) for v in value]
        return value
