"""Syslog framing: the RFC 5424 or RFC 3164 header in front of a formatted event, and RFC 6587
framing (octet counting or LF) for stream transports.

The header is a pure function of the event, so a redelivered event yields the same bytes: its
timestamp is the event's `occurred_at` (when the transition was observed), not the send time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Literal

from bridge.model import SEVERITIES, Event
from bridge.textsafe import printable

Rfc = Literal[5424, 3164]
Framing = Literal["octet_counting", "lf"]

FACILITIES: Mapping[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
    "solaris-cron": 15, **{f"local{i}": 16 + i for i in range(8)},
}
SYSLOG_SEVERITIES: Mapping[str, int] = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7,
    "emergency": 0, "critical": 2, "error": 3, "warn": 4, "informational": 6,
}
# Our severities onto syslog's: a critical finding is not an emergency of the sending host.
DEFAULT_SEVERITY_MAP: Mapping[str, str] = {
    "info": "info", "low": "notice", "medium": "warning", "high": "err", "critical": "crit",
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def facility_code(value: str | int) -> int:
    code = FACILITIES.get(value) if isinstance(value, str) else value
    if code is None or not 0 <= code <= 23:
        raise ValueError(f"unknown syslog facility {value!r}: use 0-23 or a name like local4")
    return code


def severity_code(value: str | int) -> int:
    code = SYSLOG_SEVERITIES.get(value) if isinstance(value, str) else value
    if code is None or not 0 <= code <= 7:
        raise ValueError(f"unknown syslog severity {value!r}: use 0-7 or a name like warning")
    return code


def header_token(text: str, max_len: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, bounded, `-` when empty."""
    token = "".join(c if "!" <= c <= "~" else "_" for c in text)[:max_len]
    return token or "-"


def sd_escape(text: str) -> str:
    """RFC 5424 PARAM-VALUE escaping: `"`, `\\` and `]` take a backslash. Control, line-breaking
    and bidi characters, which the RFC lets through, become visible escapes (`\\n`, `\\x1b`,
    `\\u2028`): raw, they would end the message for LF framing or a `splitlines()` receiver."""
    return printable(text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]"))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def rfc5424_timestamp(moment: datetime) -> str:
    m = _utc(moment)
    return (f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
            f".{m.microsecond // 1000:03d}Z")


def rfc3164_timestamp(moment: datetime) -> str:
    """`Mmm dd hh:mm:ss` in UTC: the format has no zone, so receivers must assume UTC."""
    m = _utc(moment)
    return f"{_MONTHS[m.month - 1]} {m.day:2d} {m.hour:02d}:{m.minute:02d}:{m.second:02d}"


class SyslogHeaders:
    """Compiled header settings; `header(event)` is the text in front of the message.

    RFC 3164 carries no tag for CEF and LEEF (`<PRI>Mmm dd hh:mm:ss host CEF:0|...` is what
    Sentinel's and QRadar's collectors expect: the format header acts as the tag); pass `tag`
    for formats that need one (JSON gets `app_name:`).
    """

    def __init__(
        self,
        *,
        rfc: Rfc,
        facility: int,
        severity_map: Mapping[str, int],
        hostname: str,
        app_name: str,
        procid: str,
        msgid: str | None,
        structured_data: bool,
        sd_id: str,
        tag: str | None,
    ) -> None:
        self._rfc = rfc
        self._pri = {s: f"<{facility * 8 + severity_map[s]}>" for s in SEVERITIES}
        self._host = header_token(hostname, 255)
        self._app = header_token(app_name, 48)
        self._procid = header_token(procid, 128)
        self._msgid = header_token(msgid, 32) if msgid is not None else None
        self._sd = structured_data
        self._sd_id = sd_id
        self._tag = f"{header_token(tag, 32)}: " if tag else ""
        self._last: tuple[datetime, str] | None = None  # a batch mostly shares one timestamp
        # Without structured data a header depends on (time, severity, type) only, which a
        # sweep's events mostly share: cache it.
        self._cache: dict[tuple[datetime, str, str], str] = {}

    def _timestamp(self, moment: datetime) -> str:
        last = self._last
        if last is not None and last[0] == moment:
            return last[1]
        text = rfc5424_timestamp(moment) if self._rfc == 5424 else rfc3164_timestamp(moment)
        self._last = (moment, text)
        return text

    def structured_data(self, event: Event) -> str:
        params = (("id", event.id), ("type", event.type.value), ("source", event.source),
                  ("kind", event.kind), ("severity", event.severity))
        body = " ".join(f'{k}="{sd_escape(v)}"' for k, v in params)
        return f"[{self._sd_id} {body}]"

    def header(self, event: Event) -> str:
        if self._sd:
            return self._header(event)
        key = (event.occurred_at, event.severity, event.type)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= 4096:
                self._cache.clear()
            cached = self._cache[key] = self._header(event)
        return cached

    def _header(self, event: Event) -> str:
        pri = self._pri[event.severity]
        stamp = self._timestamp(event.occurred_at)
        if self._rfc == 3164:
            return f"{pri}{stamp} {self._host} {self._tag}"
        msgid = self._msgid or event.type
        sd = self.structured_data(event) if self._sd else "-"
        return f"{pri}1 {stamp} {self._host} {self._app} {self._procid} {msgid} {sd} "


# RFC 6587 framing of one message for a stream, or none for a datagram, given the message and
# its size in UTF-8 octets (which the sink has measured already, against its size limit). The
# sink frames every message of a batch with one of these and encodes the batch once.
Framer = Callable[[str, int], str]


def octet_counted(message: str, size: int) -> str:
    """RFC 6587 octet counting: `MSG-LEN SP SYSLOG-MSG`, MSG-LEN being `size`, the message's
    length in UTF-8 octets; any character may appear in the message."""
    return f"{size} {message}"


def lf_terminated(message: str, size: int) -> str:
    """RFC 6587 non-transparent framing: the message and a line feed, so the message must not
    hold one (our formats escape it; raises ValueError otherwise)."""
    if "\n" in message:
        raise ValueError("a line feed in the message breaks LF framing")
    return message + "\n"


def unframed(message: str, size: int) -> str:
    """A datagram is one message (RFC 5426): nothing to add."""
    return message


def framer(stream: bool, framing: Framing) -> Framer:
    """The framing for a stream (TCP, TLS) with `framing`, or for datagrams (UDP)."""
    if not stream:
        return unframed
    return octet_counted if framing == "octet_counting" else lf_terminated
