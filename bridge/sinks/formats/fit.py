"""Fitting under a byte budget (a UDP datagram, a receiver's line limit): one event re-encoded
by truncating its longest values first, or split over several messages that each carry its
identifiers and `bridgePart=i/n`. Limits count UTF-8 bytes of the escaped text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from bridge.sinks.formats.common import PART_KEY, FitError, KvRecord, Oversize, utf8_size


def cut_escaped(value: str, escape: Callable[[str], str], max_bytes: int) -> str:
    """The longest prefix of `value` whose escaped UTF-8 form fits `max_bytes`."""
    if utf8_size(escape(value)) <= max_bytes:
        return value
    lo, hi = 0, len(value)  # escaping is per character, so cost grows with the prefix
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if utf8_size(escape(value[:mid])) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return value[:lo]


def water_level(costs: Sequence[int], budget: int) -> int:
    """The largest cap C with sum(min(c, C)) <= budget: shrink the longest values first."""
    lo, hi = 0, max(costs, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(c, mid) for c in costs) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _fit_kv_truncate(rec: KvRecord, limit: int) -> list[str]:
    fixed, loose = rec.pairs[: rec.fixed], rec.pairs[rec.fixed:]
    esc = rec.escape_value
    costs = [utf8_size(rec.escape_name(rec.name))] + [utf8_size(esc(v)) for _, v in loose]
    overhead = utf8_size(rec.render()) - sum(costs)
    if overhead > limit:
        raise FitError(f"{overhead} bytes of header and identifiers exceed the {limit} byte limit")
    cap = water_level(costs, limit - overhead)
    name = cut_escaped(rec.name, rec.escape_name, cap)
    pairs = fixed + tuple((k, cut_escaped(v, esc, cap)) for k, v in loose)
    return [replace(rec, name=name, pairs=pairs).render()]


def _fit_kv_split(rec: KvRecord, limit: int) -> list[str]:
    esc, sep = rec.escape_value, rec.sep
    fixed, loose = rec.pairs[: rec.fixed], rec.pairs[rec.fixed:]
    marker_room = len(sep) + len(PART_KEY) + len("=9999/9999")
    base = replace(rec, pairs=fixed)
    room = limit - utf8_size(base.render()) - marker_room
    min_room = 128
    if room < min_room:  # shrink the name so that parts carry at least some payload
        name_cost = utf8_size(rec.escape_name(rec.name))
        name = cut_escaped(rec.name, rec.escape_name, max(0, name_cost - (min_room - room)))
        base = replace(base, name=name)
        room = limit - utf8_size(base.render()) - marker_room
        if room < min_room:
            raise FitError(f"header and identifiers leave no room in a {limit} byte message")
    parts: list[list[tuple[str, str]]] = [[]]
    used = 0
    for key, value in loose:
        cost = len(sep) + utf8_size(key) + 1 + utf8_size(esc(value))
        if used + cost > room and cost <= room and parts[-1]:
            parts.append([])
            used = 0
        if used + cost <= room:
            parts[-1].append((key, value))
            used += cost
            continue
        while value:  # longer than a whole message: continue it under the same key
            avail = room - used - len(sep) - utf8_size(key) - 1
            chunk = cut_escaped(value, esc, avail) if avail > 0 else ""
            if not chunk:
                if not parts[-1]:
                    raise FitError(f"key {key!r} leaves no room in a {limit} byte message")
                parts.append([])
                used = 0
                continue
            parts[-1].append((key, chunk))
            used += len(sep) + utf8_size(key) + 1 + utf8_size(esc(chunk))
            value = value[len(chunk):]
    if len(parts) > 9999:
        raise FitError("event would need more than 9999 messages")
    total = len(parts)
    return [
        replace(base, pairs=(*fixed, (PART_KEY, f"{i}/{total}"), *part)).render()
        for i, part in enumerate(parts, start=1)
    ]


def fit_kv(rec: KvRecord, limit: int, oversize: Oversize) -> list[str]:
    """Render `rec` in messages of at most `limit` UTF-8 bytes each."""
    text = rec.render()
    if utf8_size(text) <= limit:
        return [text]
    return _fit_kv_split(rec, limit) if oversize == "split" else _fit_kv_truncate(rec, limit)
