"""Syslog headers (RFC 5424, RFC 3164) and stream framing (RFC 6587), pure."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.sinks.syslog import SyslogSinkConfig
from bridge.sinks.syslog_framing import (
    Framer,
    header_token,
    lf_terminated,
    octet_counted,
    unframed,
)
from tests.syslog import expect
from tests.syslog.events import TEN_KB_ESC, event
from tests.syslog.parsers import parse_3164, parse_5424, parse_cef


def sink(**overrides: Any) -> Any:
    settings = {"name": "s", "type": "syslog", "host": "127.0.0.1", "hostname": "bridge-test",
                "procid": "4242", **overrides}
    return SyslogSinkConfig.model_validate(settings).build()


def message(e: Any, **overrides: Any) -> str:
    ((text, size),) = sink(**overrides).messages(e)
    assert size == len(text.encode())
    return text


def test_rfc5424_header() -> None:
    e = event()
    msg = parse_5424(message(e))
    assert (msg.pri, msg.version, msg.timestamp) == (20 * 8 + 3, 1, "2024-02-29T23:59:58.987Z")
    assert (msg.hostname, msg.app_name, msg.procid, msg.msgid) == (
        "bridge-test", "bridge", "4242", "new")
    assert msg.structured_data is None and msg.msg.startswith("CEF:0|ScanOrbit|")


def test_rfc5424_structured_data_is_escaped() -> None:
    e = event(kind='a"b]c\\d', source="s]x")
    msg = parse_5424(message(e, structured_data=True, sd_id="acme@32473"))
    assert msg.structured_data == [("acme@32473", [
        ("id", e.id), ("type", "new"), ("source", "s]x"), ("kind", 'a"b]c\\d'),
        ("severity", "high")])]
    assert parse_cef(msg.msg).get("externalId") == e.id


def test_structured_data_never_breaks_the_line() -> None:
    hostile = "k\n\r\t\x00\x1b[2J\x85\u2028\u202e\\x1b"
    text = message(event(kind=hostile, source="s\x1e"), structured_data=True)
    assert text.splitlines() == [text] and "\x00" not in text and "\x1b" not in text
    assert '\\n\\r\\t\\x00\\x1b[2J\\x85\\u2028\\u202e\\\\x1b' in text
    (_, params), = parse_5424(text).structured_data or []
    assert dict(params)["kind"] == hostile and dict(params)["source"] == "s\x1e"


def test_timestamps_are_utc_with_milliseconds() -> None:
    moment = datetime(2024, 3, 5, 1, 2, 3, 456789, tzinfo=timezone(timedelta(hours=2)))
    e = event(occurred_at=moment)
    assert parse_5424(message(e)).timestamp == "2024-03-04T23:02:03.456Z"
    assert parse_3164(message(e, rfc=3164), tagged=False).timestamp == "Mar  4 23:02:03"
    assert parse_3164(message(event(occurred_at=moment + timedelta(days=10)), rfc=3164),
                      tagged=False).timestamp == "Mar 14 23:02:03"


def test_rfc3164_is_what_cef_collectors_expect() -> None:
    e = event()
    text = message(e, rfc=3164)
    assert text.startswith("<163>Feb 29 23:59:58 bridge-test CEF:0|ScanOrbit|ScanOrbit|0.1.0|")
    leef = message(e, rfc=3164, format="leef")
    assert leef.startswith("<163>Feb 29 23:59:58 bridge-test LEEF:2.0|ScanOrbit|")
    legacy = parse_3164(message(e, rfc=3164, format="json", app_name="siem-bridge"), tagged=True)
    assert legacy.tag == "siem-bridge" and legacy.msg.startswith('{"id":')


@pytest.mark.parametrize("severity", ["info", "low", "medium", "high", "critical"])
def test_pri_from_facility_and_severity_map(severity: str) -> None:
    e = event(severity=severity)
    assert parse_5424(message(e)).pri == expect.pri(e)
    custom = parse_5424(message(e, facility=3, severity_map={"critical": "emerg", "info": 7}))
    mapped = {"critical": 0, "info": 7}.get(severity, expect.SYSLOG_SEVERITY[severity])
    assert custom.pri == 3 * 8 + mapped
    assert parse_5424(message(e, facility="kern", severity_map={severity: 0})).pri == 0


def test_header_fields_are_sanitized_and_bounded() -> None:
    assert header_token("my host\nname", 255) == "my_host_name"
    assert header_token("é" * 300, 255) == "_" * 255
    assert header_token("", 48) == "-"
    msg = parse_5424(message(event(), hostname="h" * 300, msgid="FINDING"))
    assert msg.hostname == "h" * 255 and msg.msgid == "FINDING"


def test_stream_framing() -> None:
    """RFC 6587 around one message, given its size in UTF-8 octets as the sink measures it."""
    assert octet_counted("é", len("é".encode())) == "2 é"
    assert lf_terminated("abc", 3) == "abc\n"
    with pytest.raises(ValueError, match="line feed"):
        lf_terminated("a\nb", 3)
    assert unframed("a\nb", 3) == "a\nb"  # a datagram is a message, whatever it holds


@pytest.mark.parametrize(("overrides", "framing"), [
    ({}, octet_counted), ({"framing": "lf"}, lf_terminated), ({"protocol": "udp"}, unframed)])
def test_a_batch_is_its_events_messages_framed(overrides: dict[str, Any],
                                               framing: Framer) -> None:
    """One path: what `frame` writes is each event's `messages`, split parts included, each
    framed by the `syslog_framing` function the settings name."""
    s = sink(max_message_size=600, oversize="split", **overrides)
    events = [event(title="é" * 3), event(title=TEN_KB_ESC[:3000]), event(title="plain")]
    expected = [framing(text, size) for e in events for text, size in s.messages(e)]
    assert len(expected) > len(events)  # the long one went in several parts
    chunks, rejected = s.frame(events)
    assert rejected == {}
    if overrides.get("protocol") == "udp":
        assert chunks == [text.encode() for text in expected]
    else:
        assert chunks == ["".join(expected).encode()]


def test_an_event_that_cannot_be_encoded_is_left_out_whole() -> None:
    s = sink(max_message_size=600, oversize="split")
    good, bad = event(title="fine"), event(title=TEN_KB_ESC[:3000], key="\ud800")
    chunks, rejected = s.frame([good, bad, good])
    assert list(rejected) == [bad.id] and rejected[bad.id].startswith("UnicodeEncodeError: ")
    ((text, size),) = s.messages(good)
    assert chunks == [octet_counted(text, size).encode() * 2]


def test_batch_framing_counts_octets_not_characters() -> None:
    events = [event(title="é" * 3), event(title="plain")]
    octets = sink().frame(events)[0]
    data = b"".join(octets)
    pos, messages = 0, []
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        messages.append(data[space + 1:space + 1 + length].decode())
        pos = space + 1 + length
    assert [parse_cef(parse_5424(m).msg).name for m in messages] == ["ééé", "plain"]
    lines = b"".join(sink(framing="lf").frame(events)[0]).split(b"\n")
    assert lines[-1] == b"" and [m.encode() for m in messages] == lines[:-1]
    datagrams = sink(protocol="udp").frame(events)[0]
    assert [d.decode() for d in datagrams] == messages
