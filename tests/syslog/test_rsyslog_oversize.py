"""UDP's size limit through a real rsyslogd: 2048-byte datagrams by default, an oversize event
truncated into one of them or split over several that reassemble to the whole event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.sinks.formats.common import PART_KEY
from tests.support.rsyslogd import Rsyslogd
from tests.syslog import expect
from tests.syslog.checks import check_envelope, merge, shrunk
from tests.syslog.conftest import Certs, make_config, wait_records
from tests.syslog.events import SPECIALS, TEN_KB_2, TEN_KB_3, TEN_KB_ESC, event
from tests.syslog.parsers import parse_5424, parse_cef, parse_leef


def huge() -> Any:
    return event(title=TEN_KB_2, key=TEN_KB_3[:1500], status=TEN_KB_ESC, reason=SPECIALS,
                 attributes={"host": TEN_KB_ESC[:3000], "user": "bob"})


def kv(fmt: str, text: str) -> list[tuple[str, str]]:
    return parse_cef(text).extensions if fmt == "cef" else parse_leef(text).attributes


def whole(fmt: str, e: Any) -> list[tuple[str, str]]:
    return expect.cef_extensions(e) if fmt == "cef" else expect.leef_attributes(e)


@pytest.mark.parametrize("fmt", ["cef", "leef", "json"])
async def test_truncated_to_one_datagram(rsyslog: Rsyslogd, certs: Certs, fmt: str) -> None:
    e = huge()
    sink = make_config(rsyslog, certs, "udp", format=fmt).build()
    await sink.send([e])
    (record,) = (await wait_records(rsyslog, "udp", [e.id]))[e.id]
    assert len(record["raw"].encode()) <= 2048
    text = check_envelope(record, e, rfc=5424, fmt=fmt)
    if fmt == "json":
        got, full = json.loads(text), expect.json_object(e)
        assert shrunk(full, got) and got["id"] == e.id and got["item_uid"] == e.item_uid
        return
    got_pairs, full_pairs = kv(fmt, text), whole(fmt, e)
    assert [k for k, _ in got_pairs] == [k for k, _ in full_pairs]
    assert all(f.startswith(g) for (_, g), (_, f) in zip(got_pairs, full_pairs, strict=True))


@pytest.mark.parametrize("fmt", ["cef", "leef", "json"])
async def test_split_over_datagrams_loses_nothing(rsyslog: Rsyslogd, certs: Certs,
                                                  fmt: str) -> None:
    e = huge()
    sink = make_config(rsyslog, certs, "udp", format=fmt, oversize="split").build()
    await sink.send([e])
    expected_parts = len(sink.messages(e))
    assert expected_parts > 3
    records = (await wait_records(rsyslog, "udp", [e.id], each=expected_parts))[e.id]
    assert len(records) == expected_parts
    assert all(len(r["raw"].encode()) <= 2048 for r in records)
    texts = [check_envelope(r, e, rfc=5424, fmt=fmt) for r in records]
    if fmt == "json":
        objects = sorted((json.loads(t) for t in texts), key=lambda o: o["part"])
        merged: dict[str, Any] = {"id": e.id}
        for obj in objects:
            obj.pop("part"), obj.pop("parts")
            merged.update(obj)
        full = expect.json_object(e)
        assert list(merged) == list(full) and shrunk(full, merged)
        for key, value in full.items():  # only a key too big for a message of its own is cut
            fits = len(json.dumps({key: value}, ensure_ascii=False).encode()) < 1800
            assert (merged[key] == value) == fits, key
        return
    parts = sorted((kv(fmt, t) for t in texts),
                   key=lambda p: int(dict(p)[PART_KEY].split("/")[0]))
    full = whole(fmt, e)
    loose: list[tuple[str, str]] = []
    for part in parts:
        assert part[:3] == full[:3]
        loose += part[4:]
    assert merge(loose) == full[3:]
    assert parse_5424(records[0]["raw"]).msgid == "new"
