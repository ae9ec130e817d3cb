"""Durations and moments as operators type them: `90s`, `30m`, `24h`, `7d`, `2w`, or an ISO
time. One parser for the command line and the admin API, so `--duration 7d` and
`{"duration": "7d"}` cannot mean different things."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> timedelta:
    """`7d` → 7 days. A positive number with one unit of s, m, h, d or w; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: a number and one of s, m, h, d, w "
                         "(e.g. 30m, 24h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than zero")
    return timedelta(seconds=seconds)


def parse_moment(text: str, now: datetime) -> datetime:
    """An ISO time (UTC when it names no zone), or an age such as `24h` meaning that long
    before `now`."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO time (2026-01-31, 2026-01-31T08:00:00Z) "
                         "nor an age (30m, 24h, 7d)") from None


def parse_time(text: str) -> datetime:
    """An ISO time; UTC when it names no zone."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO time (2026-01-31T08:00:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
