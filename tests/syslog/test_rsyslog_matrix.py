"""Every format x transport x RFC through `SyslogSink.send` into a real rsyslogd and back:
the bytes arrive unchanged, and a strict parser finds every header field, escape and value."""

from __future__ import annotations

import pytest

from bridge.sinks.formats.cef import CefConfig
from tests.support.rsyslogd import Rsyslogd
from tests.syslog.checks import check_envelope, check_payload
from tests.syslog.conftest import Certs, make_config, wait_records
from tests.syslog.events import adversarial_events

TRANSPORTS = [("udp", "octet_counting"), ("tcp", "octet_counting"), ("tcp", "lf"),
              ("tls", "octet_counting"), ("tls", "lf")]
CEF_EXTRA = {"request": "url", "requestClientApplication": "agent"}


@pytest.mark.parametrize("rfc", [5424, 3164])
@pytest.mark.parametrize(("protocol", "framing"), TRANSPORTS)
@pytest.mark.parametrize("fmt", ["cef", "leef", "json"])
async def test_round_trip(rsyslog: Rsyslogd, certs: Certs, fmt: str, protocol: str,
                          framing: str, rfc: int) -> None:
    events = adversarial_events()
    cef_fields = {**CefConfig().fields, **{k: f"raw.{v}" for k, v in CEF_EXTRA.items()}}
    config = make_config(
        rsyslog, certs, protocol, format=fmt, rfc=rfc, framing=framing,
        cef={"fields": cef_fields},
        # Loopback carries 64 KB datagrams; the 2048 default is tested with oversize handling.
        max_message_size=65000 if protocol == "udp" else None,
    )
    sink = config.build()
    expected = {e.id: sink.messages(e) for e in events}
    await sink.send(events)
    await sink.close()

    received = await wait_records(rsyslog, protocol, expected)
    for event in events:
        records = received[event.id]
        assert len(records) == 1, "each event arrives exactly once, in one message"
        assert records[0]["raw"] == expected[event.id][0][0], "bytes changed on the way"
        text = check_envelope(records[0], event, rfc=rfc, fmt=fmt)
        check_payload(text, event, fmt, cef_extra=CEF_EXTRA)
