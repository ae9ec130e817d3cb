"""Slack, Teams and PagerDuty presets against receivers that follow each service's documented
contract strictly (tests/support/service_receivers.py): the payload of every event type, the
limits that must shorten a message instead of getting it refused, and each service's answers
(429 with Retry-After, 410, 400 with PagerDuty's errors, timeouts, 5xx) through the outbox
worker."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import ConfigError, parse_config
from bridge.grouping import Digest, StormSummary
from bridge.model import Event, EventType
from bridge.outbox import SinkWorker
from bridge.secrets import redact
from bridge.sinks.base import PermanentDeliveryError, RetryableDeliveryError, ThrottledError
from bridge.sinks.http.sink import HttpSink
from bridge.sinks.pagerduty import PagerDutySinkConfig
from bridge.sinks.slack import SlackSinkConfig
from bridge.sinks.teams import TeamsSinkConfig
from bridge.store.sqlite import SQLiteStore
from tests.core._helpers import make_event
from tests.support.service_receivers import (
    Answer,
    PagerDutyReceiver,
    ServiceReceiver,
    SlackReceiver,
    TeamsReceiver,
)
from tests.support.sink_contract import commit

pytestmark = pytest.mark.timeout(60)

LINKS = {"so": "https://console.scanorbit.example/findings/{{ key | urlencode }}"}
FAST = {"backoff_initial": 0.001, "backoff_max": 0.01, "timeout": 5,
        "max_events_per_minute": None}


def lifecycle(key: str = "k1", **kw: Any) -> list[Event]:
    """One item's whole life: new, changed (severity up), resolved, reopened."""
    return [make_event(key, type_=EventType.NEW, counter=1, severity="high", tenant="acme", **kw),
            make_event(key, type_=EventType.CHANGED, counter=2, severity="critical",
                       tenant="acme", changes={"severity": ("high", "critical")}, **kw),
            make_event(key, type_=EventType.RESOLVED, counter=3, severity="critical",
                       tenant="acme", reason="vendor status resolved", **kw),
            make_event(key, type_=EventType.REOPENED, counter=4, severity="critical",
                       tenant="acme", **kw)]


def slack(rx: ServiceReceiver, **kw: Any) -> HttpSink:
    return SlackSinkConfig.model_validate({"name": "slack", "type": "slack",
                                           "webhook_url": rx.url, **FAST, **kw}).build()


def teams(rx: ServiceReceiver, **kw: Any) -> HttpSink:
    return TeamsSinkConfig.model_validate({"name": "teams", "type": "teams",
                                           "webhook_url": rx.url, **FAST, **kw}).build()


def pagerduty(rx: ServiceReceiver, **kw: Any) -> HttpSink:
    return PagerDutySinkConfig.model_validate({
        "name": "pagerduty", "type": "pagerduty", "url": rx.url,
        "routing_key": PagerDutyReceiver.routing_key, **FAST, **kw}).build()


async def send(sink: HttpSink, events: list[Event]) -> None:
    try:
        await sink.send(events)
    finally:
        await sink.close()


@pytest.fixture
async def slack_rx() -> AsyncIterator[SlackReceiver]:
    rx = SlackReceiver()
    await rx.start()
    yield rx
    await rx.stop()
    assert rx.violations == []


@pytest.fixture
async def teams_rx() -> AsyncIterator[TeamsReceiver]:
    rx = TeamsReceiver()
    await rx.start()
    yield rx
    await rx.stop()
    assert rx.violations == []


@pytest.fixture
async def pd_rx() -> AsyncIterator[PagerDutyReceiver]:
    rx = PagerDutyReceiver()
    await rx.start()
    yield rx
    await rx.stop()
    assert rx.violations == []


def texts(node: Any) -> list[str]:
    """Every `text` string in a Block Kit or Adaptive Card tree."""
    if isinstance(node, dict):
        own = [node["text"]] if isinstance(node.get("text"), str) else []
        return own + [t for v in node.values() for t in texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in texts(v)]
    return []


# -- Slack ------------------------------------------------------------------------------------


async def test_slack_block_kit_message_for_every_event_type(slack_rx: SlackReceiver) -> None:
    events = lifecycle()
    await send(slack(slack_rx, console_links=LINKS), events)
    assert slack_rx.arrived() == [e.id for e in events]
    new, changed, resolved, reopened = slack_rx.accepted
    for message, event in zip(slack_rx.accepted, events, strict=True):
        (attachment,) = message["attachments"]
        header, summary, facts, context = attachment["blocks"]
        assert header["type"] == "header" and event.title in header["text"]["text"]
        assert "finding k1" in summary["text"]["text"] and "so / acme" in summary["text"]["text"]
        assert summary["accessory"]["url"] == "https://console.scanorbit.example/findings/k1"
        labels = [f["text"].split("\n")[0] for f in facts["fields"]]
        assert labels[:3] == ["*Severity*", "*Kind*", "*Key*"]
        assert event.id in context["elements"][0]["text"]
        assert message["text"] == header["text"]["text"]
    assert new["attachments"][0]["color"] == "#D9480F"  # high
    assert changed["attachments"][0]["color"] == "#8B0000"  # critical
    assert "*Changed Severity*\nhigh → critical" in texts(changed)
    assert resolved["attachments"][0]["color"] == "#2B8A3E"  # green, whatever the severity
    assert "RESOLVED" in resolved["text"] and "RESOLVED" not in reopened["text"]
    assert reopened["text"].startswith("🟥 Reopened CRITICAL")


async def test_slack_limits_shorten_the_message_never_get_it_refused(
        slack_rx: SlackReceiver) -> None:
    huge = make_event("k1", title="T" * 10_000, tenant="x" * 5_000,
                      attributes={f"a{i}": "v" * 3_000 for i in range(20)})
    fields = ["severity", "tenant", *[f"attributes.a{i}" for i in range(20)]]
    await send(slack(slack_rx, fields=fields), [huge])
    (message,) = slack_rx.accepted  # the strict receiver accepted it: every limit held
    header, summary, facts, _ = message["attachments"][0]["blocks"]
    assert len(header["text"]["text"]) == 150 and header["text"]["text"].endswith("…")
    assert len(summary["text"]["text"]) == 3000 and summary["text"]["text"].endswith("…")
    assert len(facts["fields"]) == 10
    assert all(len(f["text"]) <= 2000 for f in facts["fields"])


async def test_slack_digest_of_a_thousand_events_fits_fifty_blocks(
        slack_rx: SlackReceiver) -> None:
    events = tuple(make_event(f"k{i}", severity=("low", "critical")[i % 2],
                              title=f"finding {i} " + "x" * 150) for i in range(1000))
    sink = slack(slack_rx, console_links=LINKS)
    try:
        await sink.send_digest(Digest((("source", "so"),), events))
        await sink.send_summary(StormSummary("slack", events, limit=60, top_n=10))
    finally:
        await sink.close()
    digest, summary = slack_rx.accepted
    blocks = digest["attachments"][0]["blocks"]
    assert len(blocks) <= 50 and digest["text"] == "1000 events: source=so"
    assert digest["attachments"][0]["color"] == "#8B0000"
    shown = sum(t.count("\n• ") + t.startswith("• ") for t in texts(blocks))
    more = [t for t in texts(blocks) if t.startswith("… and ")]
    assert more == [f"… and {1000 - shown} more"] and 0 < shown < 1000
    assert "<https://console.scanorbit.example/findings/k1|" in json.dumps(digest)
    assert "1000 events summarised" in summary["text"]
    assert "*CRITICAL*\n500" in texts(summary) and "*LOW*\n500" in texts(summary)
    storm = StormSummary("slack", events, limit=60, top_n=10)
    assert f"`bridge state summarised --sink slack --summary {storm.id}`" in texts(summary)[-1]


async def test_slack_escapes_vendor_text_so_it_cannot_mention_or_link(
        slack_rx: SlackReceiver) -> None:
    await send(slack(slack_rx), [make_event("k1", title="<!channel> see <https://evil|here> & more")])
    (message,) = slack_rx.accepted
    header = message["attachments"][0]["blocks"][0]["text"]
    assert header["type"] == "plain_text"  # shown as it is, never parsed
    parsed = [t for t in texts(message) if t != header["text"]]  # mrkdwn, and the fallback
    assert not any("<!channel>" in t or "<https://evil" in t for t in parsed)
    assert message["text"].endswith("&lt;!channel&gt; see &lt;https://evil|here&gt; &amp; more")


# -- Teams ------------------------------------------------------------------------------------


async def test_teams_adaptive_card_in_the_workflows_envelope(teams_rx: TeamsReceiver) -> None:
    events = lifecycle()
    await send(teams(teams_rx, console_links=LINKS), events)
    assert teams_rx.arrived() == [e.id for e in events]
    for message, event in zip(teams_rx.accepted, events, strict=True):
        assert message["type"] == "message"
        (attachment,) = message["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        assert attachment["contentUrl"] is None
        card = attachment["content"]
        assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
        banner = card["body"][0]
        assert banner["type"] == "Container" and event.title in banner["items"][0]["text"]
        assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open in console",
                                    "url": "https://console.scanorbit.example/findings/k1"}]
        facts = next(b for b in card["body"] if b["type"] == "FactSet")["facts"]
        assert {"title": "Key", "value": "k1"} in facts
    resolved = teams_rx.accepted[2]["attachments"][0]["content"]["body"][0]
    assert resolved["style"] == "good" and resolved["items"][0]["color"] == "Good"
    assert resolved["items"][0]["text"].startswith("✅ RESOLVED")
    new = teams_rx.accepted[0]["attachments"][0]["content"]["body"][0]
    assert new["style"] == "attention" and "RESOLVED" not in new["items"][0]["text"]


async def test_teams_digest_and_summary_fit_the_message_size(teams_rx: TeamsReceiver) -> None:
    events = tuple(make_event(f"k{i}", title="y" * 180, severity="medium") for i in range(2000))
    sink = teams(teams_rx)
    try:
        await sink.send_digest(Digest((), events))
        await sink.send_summary(StormSummary("teams", events, limit=60, top_n=50))
    finally:
        await sink.close()
    digest, summary = teams_rx.accepted
    assert all(len(h.raw) <= 28 * 1024 for h in teams_rx.hits)
    lines = texts(digest)
    assert lines[0] == "2000 events: all events"
    assert any(t.startswith("… and ") and t.endswith(" more") for t in lines)
    assert "2000 events summarised" in texts(summary)[0]
    storm = StormSummary("teams", events, limit=60, top_n=50)
    assert texts(summary)[-1].endswith(
        f"`bridge state summarised --sink teams --summary {storm.id}`")


# -- PagerDuty ----------------------------------------------------------------------------------


async def test_pagerduty_trigger_resolve_and_dedup_key_per_item(pd_rx: PagerDutyReceiver) -> None:
    events = lifecycle()
    await send(pagerduty(pd_rx, console_links=LINKS), events)
    actions = [(b["event_action"], b["dedup_key"]) for b in pd_rx.accepted]
    uid = events[0].item_uid
    assert actions == [("trigger", uid), ("trigger", uid), ("resolve", uid), ("trigger", uid)]
    new = pd_rx.accepted[0]
    assert new["payload"]["severity"] == "error"  # high
    assert pd_rx.accepted[1]["payload"]["severity"] == "critical"
    assert new["payload"]["source"] == "so / acme" and "finding k1" in new["payload"]["summary"]
    assert new["links"] == [{"href": "https://console.scanorbit.example/findings/k1",
                             "text": "Open in scanorbit"}]
    assert "payload" not in pd_rx.accepted[2]
    assert pd_rx.alerts == {uid: "triggered"}  # reopened after the resolve


async def test_pagerduty_severity_map_and_replays_dedupe(pd_rx: PagerDutyReceiver) -> None:
    events = [make_event(f"k-{s}", severity=s) for s in ("critical", "high", "medium", "low",
                                                          "info")]
    await send(pagerduty(pd_rx), events)
    await send(pagerduty(pd_rx), events)  # a replay: same dedup keys, no new alerts
    assert [b["payload"]["severity"] for b in pd_rx.accepted[:5]] == [
        "critical", "error", "warning", "info", "info"]
    assert len(pd_rx.alerts) == 5 and set(pd_rx.events_per_alert.values()) == {2}


async def test_pagerduty_400_is_dead_lettered_with_its_errors_never_the_key(
        store: SQLiteStore) -> None:
    rx = PagerDutyReceiver(routing_key="Rdifferent0123456789abcdef012345")
    await rx.start()
    try:
        ev = make_event("k1")
        await commit(store, [ev], "pagerduty")
        worker = SinkWorker(pagerduty(rx), store)  # configured with another key
        assert await asyncio.wait_for(worker.drain(), 20) == 0
    finally:
        await rx.stop()
    (dead,) = await store.dead_letters()
    assert dead.event_id == ev.id
    assert "receiver answered 400: Event object is invalid; Invalid routing key" in dead.error
    assert PagerDutyReceiver.routing_key not in dead.error
    rx.violations.clear()


async def test_pagerduty_digest_is_one_alert_per_group(pd_rx: PagerDutyReceiver) -> None:
    open_ = tuple(make_event(f"k{i}", severity="medium") for i in range(3))
    closed = tuple(make_event(f"k{i}", type_=EventType.RESOLVED, counter=2) for i in range(3))
    group = (("source", "so"), ("kind", "finding"))
    sink = pagerduty(pd_rx)
    try:
        await sink.send_digest(Digest(group, open_))
        await sink.send_digest(Digest(group, closed))
    finally:
        await sink.close()
    trigger, resolve = pd_rx.accepted
    key = f"bridge-{Digest(group, open_).key}"
    assert (trigger["event_action"], trigger["dedup_key"]) == ("trigger", key)
    assert trigger["payload"]["custom_details"]["count"] == 3
    assert (resolve["event_action"], resolve["dedup_key"]) == ("resolve", key)
    assert pd_rx.alerts == {key: "resolved"}


def test_pagerduty_routing_key_is_a_32_character_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="32 characters"):
        parse_config({"sinks": [{"name": "pd", "type": "pagerduty", "routing_key": "short"}]})
    key_file = tmp_path / "pd.key"
    key_file.write_text(PagerDutyReceiver.routing_key + "\n")
    os.chmod(key_file, 0o600)
    config = parse_config({"sinks": [{"name": "pd", "type": "pagerduty",
                                      "routing_key_file": str(key_file)}]})
    assert isinstance(config.sinks[0], PagerDutySinkConfig)
    assert redact(f"key {PagerDutyReceiver.routing_key}") == "key ***"


# -- each service's answers through the worker ----------------------------------------------------


PRESETS = {"slack": (SlackReceiver, slack), "teams": (TeamsReceiver, teams),
           "pagerduty": (PagerDutyReceiver, pagerduty)}


@pytest.mark.parametrize("preset", sorted(PRESETS))
async def test_faults_are_retried_until_everything_arrives_once(
        store: SQLiteStore, preset: str) -> None:
    """500, a 429 with Retry-After, a slow answer beyond the timeout, then the receiver
    recovers: everything arrives, in order, nothing is dead-lettered, the 429 waited."""
    receiver_type, build = PRESETS[preset]
    rx = receiver_type()
    await rx.start()
    rx.fail_next(Answer(500, "rollup_error"), Answer(429, "rate_limited", {"Retry-After": "0.3"}),
                 Answer(200, delay=3.0))
    events = lifecycle("a") + lifecycle("b")[:2]
    try:
        await commit(store, events, preset)
        worker = SinkWorker(build(rx, name=preset, timeout=1, max_attempts=5), store)
        assert await asyncio.wait_for(worker.drain(), 30) == 0
    finally:
        await rx.stop()
    assert await store.dead_letters() == [] and rx.violations == []
    statuses = [h.status for h in rx.hits]
    assert statuses[:3] == [500, 429, 200] and set(statuses[3:]) == {200 if preset == "slack"
                                                                    else 202}
    assert rx.hits[2].at - rx.hits[1].at >= 0.3 - 0.01  # Retry-After was honoured
    if preset != "pagerduty":  # PagerDuty's resolve carries no event id
        assert sorted(rx.arrived()) == sorted(e.id for e in events)
    else:
        assert len(rx.accepted) == len(events)


@pytest.mark.parametrize(("status", "body", "kind"), [
    (429, "rate_limited", ThrottledError), (410, "channel_is_archived", PermanentDeliveryError),
    (404, "no_service", PermanentDeliveryError), (500, "rollup_error", RetryableDeliveryError)])
async def test_slack_answers_mean_what_slack_documents(
        slack_rx: SlackReceiver, status: int, body: str, kind: type[Exception]) -> None:
    slack_rx.fail_next(Answer(status, body, {"Retry-After": "30"} if status == 429 else {}))
    with pytest.raises(kind) as caught:
        await send(slack(slack_rx), [make_event("k1")])
    assert body in str(caught.value) and slack_rx.path not in str(caught.value)
    if status == 429:
        assert isinstance(caught.value, ThrottledError) and caught.value.retry_after == 30


def test_preset_urls_and_keys_are_secrets(tmp_path: Path) -> None:
    url_file = tmp_path / "slack.url"
    url_file.write_text("https://hooks.slack.com/services/T0AAAA/B0BBBB/abcdefghijklmnop\n")
    os.chmod(url_file, 0o600)
    config = parse_config({"sinks": [
        {"name": "chat", "type": "slack", "webhook_url_file": str(url_file)},
        {"name": "teams", "type": "teams",
         "webhook_url": "https://x.logic.azure.com/workflows/1/triggers/manual/paths/invoke"
                        "?api-version=1&sig=AbCdEfGhIjKlMnOpQrSt"}]})
    slack_config, teams_config = config.sinks
    assert isinstance(slack_config, SlackSinkConfig) and isinstance(teams_config, TeamsSinkConfig)
    assert slack_config.max_events_per_minute == 60 == teams_config.max_events_per_minute
    leaked = ("POST /services/T0AAAA/B0BBBB/abcdefghijklmnop failed; "
              "sig=AbCdEfGhIjKlMnOpQrSt")
    assert "abcdefghijklmnop" not in redact(leaked) and "AbCdEfGhIjKl" not in redact(leaked)
    with pytest.raises(ConfigError, match="https:// URL"):
        parse_config({"sinks": [{"name": "chat", "type": "slack", "webhook_url": "hooks"}]})


def test_a_console_link_template_typo_fails_validation() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sinks": [{"name": "chat", "type": "slack",
                                 "webhook_url": "https://hooks.slack.com/services/T/B/x",
                                 "console_links": {"scanorbit": "https://c/{{ kee }}"}}]})
    assert "sinks[0].console_links" in str(caught.value) and "'kee' is undefined" in str(
        caught.value)


# -- a scope's baseline summary (bridge/baseline.py) ----------------------------------------------


def baseline_summary() -> Event:
    from bridge.baseline import summary_event

    return summary_event(scope="so-main", source="so", vendor="scanorbit", sink="x",
                         counts={("finding", "critical"): 3, ("finding", "low"): 1200})


@pytest.mark.parametrize("preset", sorted(PRESETS))
async def test_a_baseline_summary_is_one_readable_message_that_pages_nobody(preset: str) -> None:
    receiver_type, build = PRESETS[preset]
    rx = receiver_type()
    await rx.start()
    event = baseline_summary()
    try:
        sink = build(rx)
        assert type(sink.config).default_baseline == "summary"  # chat and paging: summarised
        await send(sink, [event])
    finally:
        await rx.stop()
    assert rx.violations == []
    (message,) = rx.accepted
    shown = json.dumps(message, ensure_ascii=False)
    assert "Baseline of so-main: 1203 open item(s) recorded as known" in shown
    if preset == "pagerduty":
        assert message["payload"]["severity"] == "info"
        assert message["payload"]["custom_details"]["Severity critical"] == "3"
    else:
        assert "Severity low" in shown and "1200" in shown
