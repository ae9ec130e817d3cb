"""A webhook receiver that redirects: an event must never be acknowledged because a redirect
turned its POST into a body-less GET that something answered, and neither the event nor a
credential may follow a redirect to an origin nobody configured (issue 15, point 4)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.health import SinkVerdict
from bridge.outbox import SinkWorker
from bridge.sinks.webhook import WebhookSink, WebhookSinkConfig
from bridge.store.base import SweepCommit, SweepRecord
from bridge.store.sqlite import SQLiteStore
from tests.core._helpers import SCOPE, T0, make_event
from tests.support.hostile_receiver import (
    Recorder,
    RedirectingReceiver,
    recording_app,
    redirecting_app,
    serve,
)

pytestmark = pytest.mark.timeout(30)

HEADER_SECRET = "hdr-secret-value-0123456789"
BEARER = "bearer-secret-value-0123456789"


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()
    runner, url = await serve(recording_app(recorder))
    try:
        yield recorder, url
    finally:
        await runner.cleanup()


async def attempt_once(store: SQLiteStore, receiver: RedirectingReceiver, **config: Any
                       ) -> tuple[str | None, bool]:
    """Commit one event, let a worker try it until the first outcome; returns (the error the
    worker reported or None, whether the event is still queued)."""
    runner, base = await serve(redirecting_app(receiver))
    try:
        event = make_event("k1")
        await store.commit_sweep(SweepCommit(
            record=SweepRecord(scope=SCOPE, source="so", started_at=T0, finished_at=T0,
                               outcome="complete", events=1),
            deliveries=[(event, ["hook"])]))
        sink = WebhookSink(WebhookSinkConfig(
            type="webhook", name="hook", url=f"{base}/hook", headers={"X-Api-Key": HEADER_SECRET},
            bearer_token=BEARER, backoff_initial=0.001, backoff_max=0.01, timeout=5, **config))
        stop = asyncio.Event()
        errors: list[str | None] = []

        def status(name: str, verdict: SinkVerdict) -> None:
            errors.append(verdict.error)
            stop.set()

        await asyncio.wait_for(SinkWorker(sink, store, status).drain(stop), 20)
        queued = {s.sink: s.depth for s in await store.queue_stats()}.get("hook", 0)
        return errors[0] if errors else None, queued == 1
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_a_redirect_elsewhere_is_not_followed_and_the_event_stays_queued(
        store: SQLiteStore, elsewhere: tuple[Recorder, str], code: int) -> None:
    other, other_url = elsewhere
    receiver = RedirectingReceiver(code, f"{other_url}/collect?token=leaked-in-location")
    error, queued = await attempt_once(store, receiver)
    assert other.seen == []  # neither the event nor a credential crossed
    assert queued, "a redirect acknowledged the event"
    assert len(receiver.hook.seen) == 1 and receiver.hook.seen[0].method == "POST"
    assert error is not None and f"{code} redirecting to {other_url}/collect" in error, error
    assert "leaked-in-location" not in error


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_same_origin_redirects_are_refused_by_default(
        store: SQLiteStore, code: int) -> None:
    receiver = RedirectingReceiver(code, "/moved")
    error, queued = await attempt_once(store, receiver)
    assert queued and receiver.moved.seen == []
    assert error is not None and "not followed" in error


@pytest.mark.parametrize("code", [307, 308])
async def test_same_origin_307_308_are_followed_when_configured_with_the_body(
        store: SQLiteStore, code: int) -> None:
    receiver = RedirectingReceiver(code, "/moved")
    error, queued = await attempt_once(store, receiver, redirects="same_origin")
    assert error is None and not queued
    (moved,) = receiver.moved.seen
    assert moved.method == "POST" and moved.body == receiver.hook.seen[0].body
    assert moved.headers["webhook-id"] == make_event("k1").id


@pytest.mark.parametrize("code", [301, 302, 303])
async def test_method_changing_redirects_are_refused_even_when_same_origin_is_allowed(
        store: SQLiteStore, code: int) -> None:
    receiver = RedirectingReceiver(code, "/moved")
    error, queued = await attempt_once(store, receiver, redirects="same_origin")
    assert queued and receiver.moved.seen == [] and error is not None


@pytest.mark.parametrize("other", ["port", "scheme"])
async def test_same_origin_means_scheme_host_and_port(
        store: SQLiteStore, elsewhere: tuple[Recorder, str], other: str) -> None:
    recorder, other_url = elsewhere
    target = f"{other_url}/moved" if other == "port" else "https://127.0.0.1/moved"
    receiver = RedirectingReceiver(307, target)
    error, queued = await attempt_once(store, receiver, redirects="same_origin")
    assert queued and recorder.seen == [] and receiver.moved.seen == []
    assert error is not None and f"redirecting to {target}" in error, error


async def test_a_redirect_loop_ends(store: SQLiteStore) -> None:
    receiver = RedirectingReceiver(307, "/hook")
    error, queued = await attempt_once(store, receiver, redirects="same_origin")
    assert queued and error is not None and "redirected more than" in error
    assert len(receiver.hook.seen) == 4
