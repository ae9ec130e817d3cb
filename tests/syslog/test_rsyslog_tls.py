"""TLS (RFC 5425) against rsyslogd's gtls driver: mutual TLS, and verification that is on by
default and refuses a receiver we cannot authenticate."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from bridge import metrics
from bridge.sinks.base import RetryableDeliveryError
from tests.support.rsyslogd import Rsyslogd
from tests.syslog.conftest import Certs, make_config, wait_records
from tests.syslog.events import event
from tests.syslog.parsers import parse_5424


async def test_mutual_tls_delivers_with_a_client_certificate(rsyslog: Rsyslogd,
                                                             certs: Certs) -> None:
    sink = make_config(rsyslog, certs, "tls", input_name="mtls",
                       client_cert=str(certs.client_cert), client_key=str(certs.client_key),
                       connect_grace=0.2).build()
    events = [event(), event()]
    await sink.send(events)
    await sink.close()
    received = await wait_records(rsyslog, "mtls", [e.id for e in events])
    assert all(parse_5424(r[0]["raw"]).hostname == "bridge-test" for r in received.values())


async def test_mutual_tls_without_a_client_certificate_is_not_delivered(
        rsyslog: Rsyslogd, certs: Certs) -> None:
    # rsyslog completes the handshake, then hangs up: the grace period catches it.
    sink = make_config(rsyslog, certs, "tls", input_name="mtls", connect_grace=5.0).build()
    with pytest.raises(RetryableDeliveryError, match="reject our client certificate"):
        await sink.send([event()])
    await sink.close()


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"ca_bundle": None}, "certificate verification failed"),  # the system store
    ("rogue", "certificate verification failed"),
    ({"server_name": "other.example"}, "Hostname mismatch"),
])
async def test_verification_refuses_an_unauthenticated_receiver(
        rsyslog: Rsyslogd, certs: Certs, overrides: object, reason: str) -> None:
    settings = {"ca_bundle": str(certs.rogue_ca)} if overrides == "rogue" else overrides
    assert isinstance(settings, dict)
    sink = make_config(rsyslog, certs, "tls", **settings).build()
    with pytest.raises(RetryableDeliveryError, match=reason) as caught:
        await sink.send([event()])
    assert "127.0.0.1" in str(caught.value)
    await sink.close()


async def test_verify_false_connects_to_anyone_and_says_so(rsyslog: Rsyslogd,
                                                           certs: Certs) -> None:
    gauge = metrics.TLS_VERIFY_DISABLED.labels("unverified")
    gauge.set(0)
    with capture_logs() as logs:
        sink = make_config(rsyslog, certs, "tls", name="unverified", verify=False,
                           ca_bundle=str(certs.rogue_ca)).build()
        await sink.open()
    assert gauge._value.get() == 1
    warnings = [e for e in logs if e["event"] == "tls_verification_disabled"]
    assert len(warnings) == 2  # at build and at open
    e = event()
    await sink.send([e])
    await sink.close()
    await wait_records(rsyslog, "tls", [e.id])
