"""Hypothesis strategies for events whose text is hostile to every format, and for encoder
settings that reach every path of the encoders."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st
from pydantic import ValidationError

from bridge.model import SEVERITIES, Event, EventType
from bridge.sinks.formats.cef import CefConfig
from bridge.sinks.formats.fields import EVENT_FIELDS, CustomField
from bridge.sinks.formats.leef import LeefConfig

SPECIAL = [*"\\|=\n\r\t ^~;\"]é中😀\x00\x01\x1b\x7f", "\u0301", "\u2028", "\ufeff",
           # what splitlines() and terminals act on (issue 15)
           *"\x0b\x0c\x1c\x1d\x1e\x85\x9b\u2029\u202e\u2066\u200f\u061c"]
_chars = st.one_of(st.sampled_from(SPECIAL), st.characters(exclude_categories=("Cs",)))
short_text = st.text(_chars, max_size=24)


@st.composite
def texts(draw: st.DrawFn, allow_long: bool = True) -> str:
    """Short hostile text, or sometimes the same repeated to several KB (truncation paths)."""
    text = draw(short_text)
    if allow_long and text and draw(st.integers(0, 4)) == 0:
        text = text * draw(st.integers(1, 700))
    return text


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40),
                    st.floats(allow_nan=False, allow_infinity=False), texts())
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(short_text, inner, max_size=4)),
    max_leaves=12)
ips = st.one_of(st.ip_addresses().map(str), texts(allow_long=False))


@st.composite
def events(draw: st.DrawFn) -> Event:
    attributes: dict[str, Any] = draw(st.dictionaries(
        st.sampled_from(["ip", "ip_address", "host", "resource_name", "user",
                         "user_principal_name", "region"]),
        st.one_of(scalars, ips), max_size=6))
    changes = draw(st.dictionaries(short_text, st.tuples(scalars, scalars), max_size=2))
    moment = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(
        microseconds=draw(st.integers(0, 10**15)))
    return Event(
        id=draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        type=draw(st.sampled_from(list(EventType))),
        source=draw(texts(allow_long=False)), vendor=draw(texts(allow_long=False)),
        scope=draw(texts(allow_long=False)), kind=draw(texts()), key=draw(texts()),
        title=draw(texts()), severity=draw(st.sampled_from(SEVERITIES)),
        occurred_at=moment, counter=draw(st.integers(0, 10**6)),
        vendor_severity=draw(texts()), status=draw(texts()), tenant=draw(texts()),
        reason=draw(texts()), changes=changes, attributes=attributes,
        raw=draw(st.dictionaries(short_text, json_values, max_size=4)),
    )


# --- encoder settings ---------------------------------------------------------------------------

def _valid_delimiter(char: str) -> bool:
    try:
        LeefConfig(delimiter=char)
    except ValidationError:
        return False
    return True


# Every delimiter LEEF settings accept that is ASCII (tab, space and the punctuation), and any
# other character they accept.
ASCII_DELIMITERS = [c for c in map(chr, range(128)) if _valid_delimiter(c)]
delimiters = st.one_of(st.sampled_from(ASCII_DELIMITERS),
                       st.characters(exclude_categories=("Cs",)).filter(_valid_delimiter))

# Paths that hit every kind of reader (event fields, attributes, raw, changes), present or not
# in the events of `events_with_paths`.
PATHS = sorted({*EVENT_FIELDS, "attributes.ip", "attributes.ip_address", "attributes.host",
                "attributes.user", "attributes.region", "attributes.missing", "raw.a", "raw.a.b",
                "raw.a.list.1", "raw.n", "raw.missing.x", "changes.severity", "changes.missing"})
paths = st.one_of(st.sampled_from(PATHS), st.lists(st.sampled_from(PATHS), min_size=1, max_size=3))
# CEF keys with their own byte limits, address and integer syntax, and keys of our own.
CEF_KEYS = ["msg", "reason", "src", "dst", "dvc", "dhost", "duser", "request", "cnt", "dpt",
            "spt", "dvchost", "app", "proto", "outcome", "fileHash", "acmeKey"]
LEEF_KEYS = ["src", "title", "usrName", "identHostName", "eventType", "counter", "acmeKey"]
caps = st.one_of(st.none(), st.integers(16, 600))
labels = st.text(_chars, min_size=1, max_size=40)


@st.composite
def events_with_paths(draw: st.DrawFn) -> Event:
    """`events()` whose raw payload and changes also hold what `PATHS` reads."""
    event = draw(events())
    nested = {"b": draw(json_values), "list": draw(st.lists(json_values, max_size=3))}
    raw = {**event.raw, "a": draw(st.one_of(json_values, st.just(nested))), "n": draw(scalars)}
    changes = {**event.changes, "severity": draw(st.tuples(scalars, scalars))}
    return replace(event, raw=raw, changes=changes)


@st.composite
def cef_configs(draw: st.DrawFn) -> CefConfig:
    customs = st.builds(CustomField, label=labels, path=st.sampled_from(PATHS))
    return CefConfig(
        vendor=draw(st.none() | labels), product=draw(st.none() | labels),
        version=draw(labels),
        fields=draw(st.dictionaries(st.sampled_from(CEF_KEYS), paths, max_size=8)),
        cs=draw(st.lists(customs, max_size=6)), cn=draw(st.lists(customs, max_size=3)),
        flex=draw(st.lists(customs, max_size=2)), max_field_length=draw(caps))


@st.composite
def leef_configs(draw: st.DrawFn) -> LeefConfig:
    return LeefConfig(
        vendor=draw(st.none() | labels), product=draw(st.none() | labels),
        version=draw(labels),
        delimiter=draw(delimiters),
        fields=draw(st.dictionaries(st.sampled_from(LEEF_KEYS), paths, max_size=8)),
        max_field_length=draw(caps))
