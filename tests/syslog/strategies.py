"""Hypothesis strategies for events whose text is hostile to every format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from bridge.model import SEVERITIES, Event, EventType

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
