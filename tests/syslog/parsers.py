"""Strict parsers for what the syslog sink emits, written from the specs (RFC 5424, RFC 3164,
ArcSight CEF rev 25, IBM LEEF 2.0) and independent of the production encoders.

Strict means: anything the specs (or our documented escaping) do not allow raises `ParseError`
naming the position: an unknown escape sequence, a raw line break, an unescaped `=` inside a
CEF value, a raw delimiter inside a LEEF value, a malformed header field, and (issue 15) any raw
control, line-breaking or bidi character but tab. Those are carried as the visible escapes
`\\xHH`/`\\uHHHH` (and `\\n`, `\\r`, `\\t` in structured data), which decode back, and which
are accepted for nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.security.hostile_text import UNSAFE, UNSAFE_BUT_TAB

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class ParseError(ValueError):
    pass


def _refuse_raw_unsafe(text: str, what: str) -> None:
    for pos, char in enumerate(text):
        if char in UNSAFE_BUT_TAB:
            raise ParseError(f"raw {char!r} in {what} at {pos}")


_VISIBLE = re.compile(r"x([0-9a-f]{2})|u([0-9a-f]{4})")


def _visible_escape(text: str, pos: int, also: str = "") -> tuple[str, int] | None:
    """The character a visible escape at `text[pos]` (a backslash) stands for, and the
    position after it; None when there is none. Only unsafe characters (and `also`) may be
    escaped this way."""
    match = _VISIBLE.match(text, pos + 1)
    if match is None:
        return None
    char = chr(int(match[1] or match[2], 16))
    if char not in UNSAFE and char not in also:
        raise ParseError(f"needless visible escape for {char!r} at {pos}")
    if (ord(char) < 0x100) != (match[1] is not None):
        raise ParseError(f"{char!r} escaped in the wrong width at {pos}")
    return char, match.end()


# --- syslog envelopes ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Syslog5424:
    pri: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: list[tuple[str, list[tuple[str, str]]]] | None  # None for "-"
    msg: str


_HEADER_5424 = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) "
    r"(?P<procid>\S+) (?P<msgid>\S+) "
)
_TS_5424 = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?"
    r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)"
)
_PRINTUS = re.compile(r"[!-~]+")


def _check_pri(text: str) -> int:
    if len(text) > 1 and text.startswith("0"):
        raise ParseError(f"PRI {text!r} has a leading zero")
    pri = int(text)
    if pri > 191:
        raise ParseError(f"PRI {pri} out of range")
    return pri


def _sd_name(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and "!" <= text[pos] <= "~" and text[pos] not in '= ]"':
        pos += 1
    if not 1 <= pos - start <= 32:
        raise ParseError(f"bad SD name at {start}")
    return text[start:pos], pos


def _structured_data(text: str, pos: int) -> tuple[list[tuple[str, list[tuple[str, str]]]], int]:
    elements: list[tuple[str, list[tuple[str, str]]]] = []
    while pos < len(text) and text[pos] == "[":
        sd_id, pos = _sd_name(text, pos + 1)
        params: list[tuple[str, str]] = []
        while text[pos] == " ":
            name, pos = _sd_name(text, pos + 1)
            if text[pos:pos + 2] != '="':
                raise ParseError(f"expected =\" at {pos}")
            pos += 2
            value: list[str] = []
            while True:
                if pos >= len(text):
                    raise ParseError("unterminated PARAM-VALUE")
                char = text[pos]
                if char == "\\" and pos + 1 < len(text) and text[pos + 1] in '"\\]':
                    value.append(text[pos + 1])
                    pos += 2
                elif char == "\\" and text[pos + 1:pos + 2] in ("n", "r", "t"):
                    value.append({"n": "\n", "r": "\r", "t": "\t"}[text[pos + 1]])
                    pos += 2
                elif char == "\\" and (visible := _visible_escape(text, pos)) is not None:
                    value.append(visible[0])
                    pos = visible[1]
                elif char in UNSAFE:
                    raise ParseError(f"raw {char!r} in PARAM-VALUE at {pos}")
                elif char in '"':
                    pos += 1
                    break
                elif char == "]":
                    raise ParseError(f"unescaped ] in PARAM-VALUE at {pos}")
                else:
                    value.append(char)
                    pos += 1
            params.append((name, "".join(value)))
        if text[pos] != "]":
            raise ParseError(f"expected ] at {pos}")
        elements.append((sd_id, params))
        pos += 1
    if not elements:
        raise ParseError(f"expected structured data at {pos}")
    return elements, pos


def parse_5424(text: str) -> Syslog5424:
    _refuse_raw_unsafe(text, "an RFC 5424 message")
    match = _HEADER_5424.match(text)
    if match is None:
        raise ParseError(f"not an RFC 5424 header: {text[:80]!r}")
    ts = match["ts"]
    if ts != "-" and not _TS_5424.fullmatch(ts):
        raise ParseError(f"bad TIMESTAMP {ts!r}")
    for name, limit in (("host", 255), ("app", 48), ("procid", 128), ("msgid", 32)):
        value = match[name]
        if len(value) > limit or not _PRINTUS.fullmatch(value):
            raise ParseError(f"bad {name} {value!r}")
    pos = match.end()
    sd: list[tuple[str, list[tuple[str, str]]]] | None
    if text[pos:pos + 1] == "-":
        sd, pos = None, pos + 1
    else:
        sd, pos = _structured_data(text, pos)
    if pos == len(text):
        msg = ""
    elif text[pos] == " ":
        msg = text[pos + 1:]
    else:
        raise ParseError(f"expected SP before MSG at {pos}")
    if msg.startswith("\ufeff"):
        raise ParseError("unexpected BOM")
    return Syslog5424(_check_pri(match["pri"]), int(match["version"]), ts, match["host"],
                      match["app"], match["procid"], match["msgid"], sd, msg)


@dataclass(frozen=True)
class Syslog3164:
    pri: int
    timestamp: str
    hostname: str
    tag: str | None
    msg: str


_HEADER_3164 = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<mon>[A-Z][a-z]{2}) (?P<day>[ 12]\d|3[01]) "
    r"(?P<time>([01]\d|2[0-3]):[0-5]\d:[0-5]\d) (?P<host>[!-~]+) "
)


def parse_3164(text: str, *, tagged: bool) -> Syslog3164:
    _refuse_raw_unsafe(text, "an RFC 3164 message")
    match = _HEADER_3164.match(text)
    if match is None or match["mon"] not in MONTHS or match["day"] in (" 0", "00"):
        raise ParseError(f"not an RFC 3164 header: {text[:80]!r}")
    rest = text[match.end():]
    tag = None
    if tagged:
        tag_match = re.match(r"([A-Za-z0-9_.\-/]{1,32}): ", rest)
        if tag_match is None:
            raise ParseError(f"expected TAG: at {rest[:40]!r}")
        tag, rest = tag_match[1], rest[tag_match.end():]
    stamp = f"{match['mon']} {match['day']} {match['time']}"
    return Syslog3164(_check_pri(match["pri"]), stamp, match["host"], tag, rest)


# --- CEF ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cef:
    version: str
    vendor: str
    product: str
    device_version: str
    signature: str
    name: str
    severity: str
    extensions: list[tuple[str, str]]

    def get(self, key: str) -> str | None:
        values = [v for k, v in self.extensions if k == key]
        if len(values) > 1:
            raise ParseError(f"key {key} appears {len(values)} times")
        return values[0] if values else None


_CEF_VALUE_ESCAPES = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}
_KEY_CHAR = re.compile(r"[A-Za-z0-9_]")


def _header_fields(text: str, pos: int, kind: str, count: int, *, escaped: int
                   ) -> tuple[list[str], int]:
    """`count` pipe-ended header fields from `pos`, and where the rest begins. In the first
    `escaped` fields a backslash escapes a backslash or a pipe, or starts a visible escape."""
    fields: list[str] = []
    current: list[str] = []
    while len(fields) < count:
        if pos >= len(text):
            raise ParseError(f"{kind} header has {len(fields)} fields, needs {count}")
        char = text[pos]
        if char in "\r\n":
            raise ParseError(f"raw line break in the {kind} header at {pos}")
        if char == "\\" and len(fields) < escaped:
            nxt = text[pos + 1:pos + 2]
            visible = _visible_escape(text, pos)
            if visible is not None:
                current.append(visible[0])
                pos = visible[1]
                continue
            if nxt not in ("\\", "|"):
                raise ParseError(f"bad header escape \\{nxt} at {pos}")
            current.append(nxt)
            pos += 2
        elif char == "|":
            fields.append("".join(current))
            current = []
            pos += 1
        else:
            current.append(char)
            pos += 1
    return fields, pos


def parse_cef(text: str) -> Cef:
    if not text.startswith("CEF:"):
        raise ParseError(f"not CEF: {text[:40]!r}")
    _refuse_raw_unsafe(text, "CEF")
    fields, pos = _header_fields(text, 4, "CEF", 7, escaped=7)
    if not re.fullmatch(r"\d+", fields[0]):
        raise ParseError(f"bad CEF version {fields[0]!r}")
    if not re.fullmatch(r"\d|10", fields[6]):
        raise ParseError(f"bad CEF severity {fields[6]!r}")
    return Cef(*fields, extensions=parse_cef_extensions(text[pos:]))  # type: ignore[misc]


def parse_cef_extensions(text: str) -> list[tuple[str, str]]:
    """Every unescaped `=` ends a key: the word before it, preceded by a space (or the start)."""
    if not text:
        return []
    if "\n" in text or "\r" in text:
        raise ParseError("raw line break in CEF extensions")
    equals: list[int] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "\\":
            pos += 2
            continue
        if text[pos] == "=":
            equals.append(pos)
        pos += 1
    if not equals:
        raise ParseError("extension text without key=value")
    bounds: list[tuple[int, int]] = []  # (key start, equals position)
    for eq in equals:
        start = eq
        while start > 0 and _KEY_CHAR.match(text[start - 1]):
            start -= 1
        if start == eq:
            raise ParseError(f"unescaped '=' without a key at {eq}")
        if start != 0 and text[start - 1] != " ":
            raise ParseError(f"key at {start} not preceded by a space (unescaped '=' in a value?)")
        if not bounds and start != 0:
            raise ParseError("extension does not start with a key")
        bounds.append((start, eq))
    pairs = []
    for i, (start, eq) in enumerate(bounds):
        end = bounds[i + 1][0] - 1 if i + 1 < len(bounds) else len(text)
        pairs.append((text[start:eq], _cef_unescape(text[eq + 1:end], eq + 1)))
    return pairs


def _cef_unescape(raw: str, offset: int) -> str:
    out: list[str] = []
    pos = 0
    while pos < len(raw):
        char = raw[pos]
        if char == "\\":
            nxt = raw[pos + 1:pos + 2]
            visible = _visible_escape(raw, pos)
            if visible is not None:
                out.append(visible[0])
                pos = visible[1]
                continue
            if nxt not in _CEF_VALUE_ESCAPES:
                raise ParseError(f"bad extension escape \\{nxt} at {offset + pos}")
            out.append(_CEF_VALUE_ESCAPES[nxt])
            pos += 2
        elif char == "=":
            raise ParseError(f"unescaped '=' in a value at {offset + pos}")
        else:
            out.append(char)
            pos += 1
    return "".join(out)


# --- LEEF ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Leef:
    version: str
    vendor: str
    product: str
    device_version: str
    event_id: str
    delimiter: str
    attributes: list[tuple[str, str]]

    def get(self, key: str) -> str | None:
        values = [v for k, v in self.attributes if k == key]
        if len(values) > 1:
            raise ParseError(f"key {key} appears {len(values)} times")
        return values[0] if values else None


def _leef_delimiter(spec: str) -> str:
    if len(spec) == 1:
        return spec
    match = re.fullmatch(r"(?:0x|x)([0-9A-Fa-f]{1,4})", spec)
    if match is None:
        raise ParseError(f"bad LEEF delimiter field {spec!r}")
    return chr(int(match[1], 16))


def parse_leef(text: str) -> Leef:
    if not text.startswith("LEEF:2.0|"):
        raise ParseError(f"not LEEF 2.0: {text[:40]!r}")
    _refuse_raw_unsafe(text, "LEEF")
    # The fifth field, the delimiter, is read raw: it may be a backslash itself.
    fields, pos = _header_fields(text, len("LEEF:2.0|"), "LEEF", 5, escaped=4)
    vendor, product, version, event_id, delimiter_spec = fields
    delimiter = _leef_delimiter(delimiter_spec)
    body = text[pos:]
    if "\n" in body or "\r" in body:
        raise ParseError("raw line break in LEEF attributes")
    attributes = []
    for item in body.split(delimiter) if body else []:
        key, eq, raw = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            raise ParseError(f"bad LEEF attribute {item[:40]!r}")
        attributes.append((key, _leef_unescape(raw, delimiter)))
    return Leef("2.0", vendor, product, version, event_id, delimiter, attributes)


def _leef_unescape(raw: str, delimiter: str) -> str:
    if "\t" in raw:
        raise ParseError("raw tab in a LEEF value")
    out: list[str] = []
    pos = 0
    while pos < len(raw):
        char = raw[pos]
        if char != "\\":
            out.append(char)
            pos += 1
            continue
        nxt = raw[pos + 1:pos + 2]
        if nxt in ("\\", "n", "r", "t"):
            out.append({"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}[nxt])
            pos += 2
        elif (visible := _visible_escape(raw, pos, also=delimiter)) is not None:
            out.append(visible[0])
            pos = visible[1]
        else:
            raise ParseError(f"bad LEEF value escape \\{nxt}")
    return "".join(out)
