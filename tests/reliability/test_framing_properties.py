"""Any batch of hostile events, framed for the wire by the syslog sink, comes apart again into
exactly its messages, in order, for every format, RFC and framing; and every message parses
with the strict, spec-written parsers (tests/syslog/parsers.py), structured data carrying the
event's identity unchanged. (Payload round trips per format: tests/syslog/test_formats.py.)"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.model import Event
from bridge.sinks.formats import CefConfig, LeefConfig, encode_cef, encode_json, encode_leef
from bridge.sinks.syslog import SyslogSinkConfig
from tests.syslog.parsers import parse_3164, parse_5424
from tests.syslog.strategies import events


def unframe(data: bytes, framing: str) -> list[str]:
    """RFC 6587, written from the RFC: `MSG-LEN SP MSG` repeated, or LF-terminated lines."""
    if framing == "lf":
        assert data.endswith(b"\n") or not data
        return [line.decode("utf-8") for line in data.split(b"\n")[:-1]]
    out, pos = [], 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        assert str(length).encode() == data[pos:space]  # no sign, no leading zero
        out.append(data[space + 1:space + 1 + length].decode("utf-8"))
        pos = space + 1 + length
        assert pos <= len(data), "a frame runs past the end of the stream"
    return out


def body(event: Event, fmt: str) -> str:
    if fmt == "cef":
        return encode_cef(event, CefConfig())
    if fmt == "leef":
        return encode_leef(event, LeefConfig())
    return encode_json(event)


@settings(max_examples=150, deadline=None)
@given(batch=st.lists(events(), min_size=1, max_size=4), fmt=st.sampled_from(["cef", "leef", "json"]),
       rfc=st.sampled_from([5424, 3164]), framing=st.sampled_from(["octet_counting", "lf"]),
       sd=st.booleans())
def test_any_batch_unframes_into_its_messages(batch: list[Event], fmt: str, rfc: int,
                                              framing: str, sd: bool) -> None:
    options: dict[str, Any] = {"name": "s", "type": "syslog", "host": "127.0.0.1",
                                "protocol": "tcp", "format": fmt, "rfc": rfc,
                                "framing": framing, "hostname": "bridge-test", "procid": "7",
                                "structured_data": sd and rfc == 5424}
    sink = SyslogSinkConfig.model_validate(options).build()
    chunks, rejected = sink.frame(batch)

    # Free text in structured data (`source`, `kind`) has its line feeds and other controls
    # made visible (`sd_escape`; the parser reads them back), so every event of any batch
    # frames: none is rejected.
    assert rejected == {}
    expected = [text for e in batch for text, _ in sink.messages(e)]
    messages = unframe(b"".join(chunks), framing)
    assert messages == expected
    for event, text in zip(batch, messages, strict=True):  # TCP: no size limit, one each
        if rfc == 5424:
            parsed = parse_5424(text)
            assert parsed.msgid == event.type.value and parsed.hostname == "bridge-test"
            if sd:
                assert parsed.structured_data is not None
                ((_, params),) = parsed.structured_data
                assert dict(params) == {"id": event.id, "type": event.type.value,
                                        "source": event.source, "kind": event.kind,
                                        "severity": event.severity}
            else:
                assert parsed.structured_data is None
            msg = parsed.msg
        else:
            three = parse_3164(text, tagged=fmt == "json")
            msg = three.msg
        assert msg == body(event, fmt)
        if fmt == "json":
            assert json.loads(msg)["id"] == event.id
