"""The generic webhook against a real aiohttp receiver: Standard Webhooks signatures checked by
the `standardwebhooks` package (an independent implementation) including rotation and tampering,
the auth options, mutual TLS with real certificates, what each answer status means, and body
templates that fail at validation instead of at delivery."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
import trustme

from bridge.config import ConfigError, parse_config
from bridge.grouping import Digest, StormSummary
from bridge.model import EventType
from bridge.outbox import SinkWorker
from bridge.sinks.base import (
    DestinationUnavailableError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    ThrottledError,
)
from bridge.sinks.webhook import WebhookSink, WebhookSinkConfig
from bridge.store.sqlite import SQLiteStore
from tests.core._helpers import make_event
from tests.support.receiver import Receiver
from tests.support.sink_contract import commit

pytestmark = pytest.mark.timeout(60)


def whsec(seed: int) -> str:
    return "whsec_" + base64.b64encode(bytes((seed + i) % 256 for i in range(32))).decode()


OLD, NEW, STRANGER = whsec(1), whsec(101), whsec(201)


def sink(rx: Receiver, **settings: Any) -> WebhookSink:
    config = WebhookSinkConfig.model_validate({
        "type": "webhook", "name": "hook", "url": rx.url, "timeout": 5,
        "backoff_initial": 0.001, "backoff_max": 0.01, **settings})
    return config.build()


async def deliver(rx: Receiver, events: list[Any], **settings: Any) -> None:
    s = sink(rx, **settings)
    try:
        await s.send(events)
    finally:
        await s.close()


def verify(secret: str, raw: bytes, headers: dict[str, str]) -> Any:
    return standardwebhooks.Webhook(secret).verify(raw, headers)


# -- signing ------------------------------------------------------------------------------------


async def test_every_delivery_is_signed_and_verifies_with_standardwebhooks(
        receiver: Receiver) -> None:
    events = [make_event(f"k{i}", attributes={"i": i}) for i in range(3)]
    await deliver(receiver, events, signing_secrets=[NEW])
    assert len(receiver.received) == 3
    for r in receiver.received:
        assert r.headers["webhook-signature"].startswith("v1,")
        assert verify(NEW, r.raw, r.headers) == json.loads(r.raw)
        assert r.headers["webhook-id"] == r.body["id"]


async def test_rotation_signs_with_every_secret_so_old_and_new_receivers_verify(
        receiver: Receiver) -> None:
    await deliver(receiver, [make_event("k1")], signing_secrets=[NEW, OLD])
    (r,) = receiver.received
    assert len(r.headers["webhook-signature"].split(" ")) == 2
    verify(OLD, r.raw, r.headers)  # a receiver not yet switched
    verify(NEW, r.raw, r.headers)  # a receiver already switched
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verify(STRANGER, r.raw, r.headers)


async def test_a_tampered_body_id_or_timestamp_fails_verification(receiver: Receiver) -> None:
    await deliver(receiver, [make_event("k1", severity="low")], signing_secrets=[NEW])
    (r,) = receiver.received
    tampered = r.raw.replace(b'"severity":"low"', b'"severity":"info"')
    assert tampered != r.raw
    for raw, headers in ((tampered, r.headers),
                         (r.raw, {**r.headers, "webhook-id": "another-id"}),
                         (r.raw, {**r.headers, "webhook-timestamp":
                                  str(int(r.headers["webhook-timestamp"]) - 1)})):
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            verify(NEW, raw, headers)


async def test_digests_and_summaries_are_signed_too(receiver: Receiver) -> None:
    events = tuple(make_event(f"k{i}") for i in range(3))
    s = sink(receiver, signing_secrets=[NEW])
    try:
        await s.send_digest(Digest((("source", "so"),), events))
        await s.send_summary(StormSummary("hook", events, limit=2, top_n=2))
    finally:
        await s.close()
    digest, summary = receiver.received
    assert verify(NEW, digest.raw, digest.headers)["type"] == "digest"
    assert digest.id == Digest((("source", "so"),), events).id
    assert [e["id"] for e in digest.body["events"]] == [e.id for e in events]
    body = verify(NEW, summary.raw, summary.headers)
    assert body["type"] == "storm_summary" and body["count"] == 3 and len(body["top"]) == 2


def test_signing_secrets_come_from_the_environment_and_files(tmp_path: Path) -> None:
    (tmp_path / "old.key").write_text(OLD + "\n")
    os.chmod(tmp_path / "old.key", 0o600)
    config = parse_config({"sinks": [{
        "name": "hook", "type": "webhook", "url": "https://example.test/hook",
        "signing_secrets": ["${HOOK_SECRET}"],
        "signing_secret_files": [str(tmp_path / "old.key")]}]},
        env={"HOOK_SECRET": NEW})
    hook = config.sinks[0]
    assert isinstance(hook, WebhookSinkConfig)
    assert [s.get_secret_value() for s in hook.signing_secrets] == [NEW, OLD]


@pytest.mark.parametrize(("secret", "why"), [
    ("not-a-whsec-secret-at-all", "starts with 'whsec_'"),
    ("whsec_!!!not base64!!!", "not valid base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "holds 5"),
])
def test_a_malformed_signing_secret_fails_the_config_without_quoting_it(
        secret: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sinks": [{"name": "hook", "type": "webhook",
                                 "url": "https://example.test/hook",
                                 "signing_secrets": [secret]}]})
    text = str(caught.value)
    assert "sinks[0].signing_secrets[0]" in text and why in text, text
    assert secret not in text


# -- auth -------------------------------------------------------------------------------------


async def test_bearer_basic_and_custom_header_auth(receiver: Receiver) -> None:
    await deliver(receiver, [make_event("a")], bearer_token="bearer-token-0123456789")
    await deliver(receiver, [make_event("b")],
                  basic_auth={"username": "bridge", "password": "pa55-w0rd-0123456789"})
    await deliver(receiver, [make_event("c")], headers={"X-Api-Key": "key-0123456789"})
    bearer, basic, custom = receiver.received
    assert bearer.authorization == "Bearer bearer-token-0123456789"
    assert basic.authorization == "Basic " + base64.b64encode(
        b"bridge:pa55-w0rd-0123456789").decode()
    assert custom.headers["X-Api-Key"] == "key-0123456789" and not custom.authorization


def test_basic_auth_password_from_a_file_and_conflicting_auth_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pa55-from-file-0123\n")
    config = WebhookSinkConfig.model_validate({
        "type": "webhook", "name": "hook", "url": "https://example.test/hook",
        "basic_auth": {"username": "u", "password_file": str(tmp_path / "pw")}})
    assert config.session_headers()["Authorization"] == "Basic " + base64.b64encode(
        b"u:pa55-from-file-0123").decode()
    with pytest.raises(ConfigError, match="either bearer_token or basic_auth"):
        parse_config({"sinks": [{"name": "hook", "type": "webhook",
                                 "url": "https://example.test/hook", "bearer_token": "x" * 12,
                                 "basic_auth": {"username": "u", "password": "p" * 12}}]})


# -- TLS: verification on by default, custom CA, mutual TLS ----------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[dict[str, Any]]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("bridge-client")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem",
             "key": tmp_path / "client.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(tls)
    ca.configure_trust(tls)
    tls.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no connection
    yield {"files": files, "server": tls}


async def test_mutual_tls_delivers_with_the_client_certificate(pki: dict[str, Any]) -> None:
    rx = await Receiver().start(tls=pki["server"])
    files = pki["files"]
    try:
        await deliver(rx, [make_event("k1")], ca_bundle=str(files["ca"]),
                      client_cert=str(files["cert"]), client_key=str(files["key"]))
        assert [r.id for r in rx.received] == [make_event("k1").id]
        # Without the client certificate the server refuses the connection (under TLS 1.3
        # after the client's side of the handshake): retried, never a delivery.
        with pytest.raises(RetryableDeliveryError):
            await deliver(rx, [make_event("k2")], ca_bundle=str(files["ca"]))
        # Verification is on by default: without our CA the server is not trusted.
        with pytest.raises(DestinationUnavailableError, match="certificate verify failed"):
            await deliver(rx, [make_event("k3")], client_cert=str(files["cert"]),
                          client_key=str(files["key"]))
        assert len(rx.received) == 1
    finally:
        await rx.stop()


# -- what answers mean --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_2xx_is_delivered(receiver: Receiver, status: int) -> None:
    receiver.mode = status
    await deliver(receiver, [make_event("k1")])
    assert receiver.accepted == [make_event("k1").id]


@pytest.mark.parametrize(("status", "kind"), [
    (408, ThrottledError), (429, ThrottledError), (503, ThrottledError),
    (500, RetryableDeliveryError), (502, RetryableDeliveryError)])
async def test_408_429_and_5xx_are_retried_honouring_retry_after(
        receiver: Receiver, status: int, kind: type[RetryableDeliveryError]) -> None:
    ev = make_event("k1")
    receiver.script(ev, (status, {"Retry-After": "7"}))
    with pytest.raises(kind) as caught:
        await deliver(receiver, [ev])
    assert type(caught.value) is kind
    assert caught.value.retry_after == 7.0 and str(status) in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
async def test_other_4xx_is_dead_lettered_with_an_excerpt_of_the_answer(
        store: SQLiteStore, status: int) -> None:
    rx = await Receiver(mode=status, echo_auth=True).start()
    ev = make_event("k1")
    try:
        await commit(store, [ev], "hook")
        worker = SinkWorker(sink(rx, bearer_token="tok-secret-0123456789abcdef"), store)
        assert await asyncio.wait_for(worker.drain(), 20) == 0
    finally:
        await rx.stop()
    (dead,) = await store.dead_letters()
    assert dead.event_id == ev.id and dead.attempts == 1
    assert f"receiver answered {status}" in dead.error and '"error": "scripted"' in dead.error
    assert "tok-secret-0123456789abcdef" not in dead.error and "***" in dead.error
    assert len(dead.error) < 500  # an excerpt, not the whole answer


async def test_a_huge_error_answer_is_read_bounded_and_quoted_as_an_excerpt() -> None:
    from aiohttp import web

    from tests.support.hostile_receiver import serve

    async def huge(request: web.Request) -> web.Response:
        return web.Response(status=400, text="x" * (4 * 1024 * 1024))

    app = web.Application()
    app.router.add_post("/hook", huge)
    runner, base = await serve(app)
    try:
        s = WebhookSinkConfig(type="webhook", name="hook", url=f"{base}/hook").build()
        with pytest.raises(PermanentDeliveryError) as caught:
            await s.send([make_event("k1")])
        await s.close()
    finally:
        await runner.cleanup()
    assert len(str(caught.value)) < 400 and str(caught.value).endswith("…")


# -- templates ----------------------------------------------------------------------------------


async def test_a_body_template_renders_in_the_sandbox(receiver: Receiver) -> None:
    template = ('{"text": {{ (severity | upper ~ ": " ~ title) | tojson }}, '
                '"region": {{ attributes.region | default("n/a") | tojson }}, '
                '"resolved": {{ (type == "resolved") | tojson }}}')
    events = [make_event("k1", attributes={"region": "eu-west-1"}),
              make_event("k2", type_=EventType.RESOLVED, counter=2)]
    await deliver(receiver, events, body_template=template, signing_secrets=[NEW])
    first, second = sorted(receiver.received, key=lambda r: r.body["text"])
    assert first.body == {"text": "HIGH: finding k1", "region": "eu-west-1", "resolved": False}
    assert second.body == {"text": "HIGH: finding k2", "region": "n/a", "resolved": True}
    verify(NEW, first.raw, first.headers)


@pytest.mark.parametrize(("template", "why"), [
    ("{{ titel }}", "'titel' is undefined"),
    ("{{ title ", "line 1"),
    ("{{ title | no_such_filter }}", "no_such_filter"),
    ("{{ title.__class__.__mro__ }}", "unsafe"),
    ('{"t": {{ title }}}', "is not JSON"),
])
def test_a_broken_template_fails_validation_naming_the_yaml_path(template: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sinks": [{"name": "hook", "type": "webhook",
                                 "url": "https://example.test/hook",
                                 "body_template": template}]})
    text = str(caught.value)
    assert "sinks[0].body_template" in text and why in text, text


async def test_an_event_the_template_cannot_render_is_dead_lettered_not_retried(
        store: SQLiteStore, receiver: Receiver) -> None:
    """A vendor attribute the template needs is missing from one event: that event is
    refused (replayable after fixing the template); the others go."""
    good, bad = make_event("k1", attributes={"zone": "a"}), make_event("k2")
    await commit(store, [good, bad], "hook")
    worker = SinkWorker(sink(receiver, body_template='{"zone": {{ attributes.zone | tojson }}}'),
                        store)
    assert await asyncio.wait_for(worker.drain(), 20) == 0
    assert receiver.accepted == [] or [r.body for r in receiver.received] == [{"zone": "a"}]
    (dead,) = await store.dead_letters()
    assert dead.event_id == bad.id and "body_template" in dead.error and "zone" in dead.error


def test_plain_text_templates_are_allowed_with_a_text_content_type() -> None:
    config = WebhookSinkConfig.model_validate({
        "type": "webhook", "name": "hook", "url": "https://example.test/hook",
        "body_template": "{{ type }}: {{ title }}", "content_type": "text/plain"})
    request = config.request_builder().event(make_event("k1"))
    assert request.body == b"new: finding k1"
