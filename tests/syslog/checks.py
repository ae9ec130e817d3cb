"""Check one received syslog message against the event it carries, field by field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bridge.model import Event
from tests.syslog import expect
from tests.syslog.conftest import HOSTNAME, PROCID
from tests.syslog.parsers import parse_3164, parse_5424, parse_cef, parse_leef


def check_envelope(record: Mapping[str, Any], event: Event, *, rfc: int, fmt: str) -> str:
    """Strictly parse the syslog header, compare it (and rsyslog's own reading); return MSG."""
    raw = record["raw"]
    if rfc == 5424:
        msg = parse_5424(raw)
        assert (msg.pri, msg.version) == (expect.pri(event), 1)
        assert msg.timestamp == expect.stamp_5424(event.occurred_at)
        assert (msg.hostname, msg.app_name, msg.procid) == (HOSTNAME, "bridge", PROCID)
        assert msg.msgid == event.type.value
        assert msg.structured_data is None
        # rsyslog's own RFC 5424 parser reads the same header.
        assert (record["pri"], record["hostname"], record["app"], record["procid"],
                record["msgid"]) == (str(msg.pri), HOSTNAME, "bridge", PROCID, msg.msgid)
        return msg.msg
    legacy = parse_3164(raw, tagged=fmt == "json")
    assert legacy.pri == expect.pri(event)
    assert legacy.timestamp == expect.stamp_3164(event.occurred_at)
    assert legacy.hostname == HOSTNAME
    assert legacy.tag == ("bridge" if fmt == "json" else None)
    assert (record["pri"], record["hostname"]) == (str(legacy.pri), HOSTNAME)
    return legacy.msg


def check_payload(text: str, event: Event, fmt: str, *,
                  cef_extra: Mapping[str, str] | None = None) -> None:
    if fmt == "cef":
        cef = parse_cef(text)
        header = {k: getattr(cef, k) for k in expect.cef_header(event)}
        assert header == expect.cef_header(event)
        assert cef.extensions == expect.cef_extensions(event, cef_extra)
    elif fmt == "leef":
        leef = parse_leef(text)
        name = expect.device_name(event)
        assert (leef.vendor, leef.product, leef.device_version) == (name, name, "0.1.0")
        assert leef.event_id == expect.leef_header_text(f"{event.kind}:{event.type.value}")
        assert leef.attributes == expect.leef_attributes(event)
    else:
        assert json.loads(text) == expect.json_object(event)


def merge(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Join the chunks a split continued under the same key (keys are unique in a record)."""
    merged: list[tuple[str, str]] = []
    for key, value in pairs:
        if merged and merged[-1][0] == key:
            merged[-1] = (key, merged[-1][1] + value)
        else:
            merged.append((key, value))
    return merged


def shrunk(original: Any, got: Any) -> bool:
    """Same structure; strings may be cut to a prefix."""
    if isinstance(original, str):
        return isinstance(got, str) and original.startswith(got)
    if isinstance(original, dict):
        return (isinstance(got, dict) and list(got) == list(original)
                and all(shrunk(original[k], got[k]) for k in original))
    if isinstance(original, list):
        return (isinstance(got, list) and len(got) == len(original)
                and all(shrunk(o, g) for o, g in zip(original, got, strict=True)))
    return bool(original == got)
