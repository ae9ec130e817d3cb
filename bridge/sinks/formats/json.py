"""JSON: `Event.to_dict()` as one compact line, the outbox's own form, made safe for any line
reader; and its fitting under a byte budget, which keeps the shape of the object."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from bridge.model import Event
from bridge.sinks.formats.common import FitError, Oversize, utf8_size
from bridge.sinks.formats.fit import cut_escaped, water_level
from bridge.textsafe import UNSAFE_EXCEPT_TAB_LF_CR


def _json_unicode_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_safe(text: str) -> str:
    """Compact JSON from orjson with the characters it leaves raw escaped as `\\uXXXX`.

    orjson escapes C0 controls but not DEL, C1 controls (NEL U+0085), U+2028/U+2029 or bidi
    controls: valid JSON, yet `splitlines()`-style receivers break a line on some of them and
    terminals act on others. Such characters can only sit inside JSON strings, where `\\uXXXX`
    means the same character, so the decoded value is unchanged.

    orjson escapes every C0 control (RFC 8259 requires it) and writes no whitespace, so ASCII
    output can only hold DEL: one C-speed `in` settles the common case."""
    if text.isascii() and "\x7f" not in text:
        return text
    return UNSAFE_EXCEPT_TAB_LF_CR.escape(text, _json_unicode_escape)


def stored_json_lines(bodies: Sequence[str]) -> str:
    """Stored `Event.to_json` texts as the lines `encode_json` makes of their events: what a
    JSON-lines sink writes from the outbox bodies it was handed (`Sink.send_stored`)."""
    return "".join(json_safe(body) + "\n" for body in bodies)


def encode_json(event: Event) -> str:
    """`Event.to_dict()` as one compact line: `Event.to_json()`, the outbox's own form, with
    every control, line-breaking and bidi character escaped (`json_safe`), so never a line
    break for any receiver and the same object once decoded."""
    return json_safe(event.to_json())


# Truncation shortens the longest strings anywhere in the object except the few fields that
# identify the event; split puts top-level keys in several objects carrying `id` and
# `part`/`parts`, shortening strings only of a key too large for a message of its own.
JSON_FIXED_KEYS = frozenset({"id", "type", "item_uid", "severity", "severity_score", "counter",
                             "occurred_at"})


def _dumps(value: Any) -> str:
    return json_safe(orjson.dumps(value, default=str).decode())


def _json_escape(text: str) -> str:
    return _dumps(text)[1:-1]


def _string_leaves(value: Any, out: list[tuple[Any, Any, str]]) -> None:
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for k, v in items:
        if isinstance(v, str):
            out.append((value, k, v))
        elif isinstance(v, dict | list):
            _string_leaves(v, out)


def _shrink_json(data: dict[str, Any], keys: Sequence[str], limit: int) -> dict[str, Any]:
    """Shorten the longest strings under `keys` until `_dumps(data)` fits `limit` bytes."""
    data = orjson.loads(_dumps(data))  # a private deep copy, with `default=str` applied
    leaves: list[tuple[Any, Any, str]] = []
    for key in keys:
        value = data[key]
        if isinstance(value, str):
            leaves.append((data, key, value))
        elif isinstance(value, dict | list):
            _string_leaves(value, leaves)
    costs = [utf8_size(_json_escape(s)) for _, _, s in leaves]
    overhead = utf8_size(_dumps(data)) - sum(costs)
    if overhead > limit:
        raise FitError(f"the JSON structure alone needs {overhead} bytes, over the {limit} limit")
    cap = water_level(costs, limit - overhead)
    for (container, key, text), cost in zip(leaves, costs, strict=True):
        if cost > cap:
            container[key] = cut_escaped(text, _json_escape, cap)
    return data


def fit_json(event: Event, limit: int, oversize: Oversize) -> list[str]:
    """One event as JSON objects of at most `limit` UTF-8 bytes each."""
    text = encode_json(event)
    if utf8_size(text) <= limit:
        return [text]
    data = event.to_dict()
    loose = [k for k in data if k not in JSON_FIXED_KEYS]
    if oversize == "truncate":
        return [_dumps(_shrink_json(data, loose, limit))]
    base = {"id": data["id"], "part": 9999, "parts": 9999}
    room = limit - utf8_size(_dumps(base)) - 1  # the comma before the first key
    if room < 16:
        raise FitError(f"a {limit} byte message cannot carry a JSON part")
    parts: list[dict[str, Any]] = [{}]
    used = 0
    for key in [k for k in data if k != "id"]:
        member = {key: data[key]}
        cost = utf8_size(_dumps(member)) - 1  # `"key":value,` without braces plus its comma
        if cost > room:
            if key in JSON_FIXED_KEYS:
                raise FitError(f"identifier {key!r} alone exceeds a {limit} byte message")
            member = _shrink_json(member, [key], room + 1)
            cost = utf8_size(_dumps(member)) - 1
        if used + cost > room and parts[-1]:
            parts.append({})
            used = 0
        parts[-1].update(member)
        used += cost
    total = len(parts)
    return [_dumps({"id": data["id"], "part": i, "parts": total, **part})
            for i, part in enumerate(parts, start=1)]


class JsonEncoder:
    """JSON as a `Formatter`: it has no settings, so one instance serves every sink."""

    encode = staticmethod(encode_json)
    fit = staticmethod(fit_json)


JSON = JsonEncoder()
