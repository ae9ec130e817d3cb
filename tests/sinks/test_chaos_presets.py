"""The chaos runs judge the Slack, Teams and PagerDuty sinks against the file sink's events
(tests/support/chaos.py `PresetTargets`). This holds that judge to account: it must fail a
lost event, an item's events out of order, an event nobody sent, a payload the service would
refuse, and a PagerDuty alert that does not end as its item did."""

from __future__ import annotations

from random import Random

from bridge.model import EventType
from tests.core._helpers import make_event
from tests.support.chaos import PresetTargets
from tests.support.ledger import Received


def truth() -> list[Received]:
    events = [make_event("a", type_=EventType.NEW, counter=1),
              make_event("a", type_=EventType.RESOLVED, counter=2),
              make_event("b", type_=EventType.NEW, counter=1)]
    return [Received.of("file", e.to_dict()) for e in events]


def slack_message(event_id: str) -> dict[str, object]:
    return {"text": "t", "attachments": [{"color": "#000000", "blocks": [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"new · event {event_id}"}]}]}]}


def targets(slack_ids: list[str], pd_triggers: list[str], pd_alerts: dict[str, str]
            ) -> PresetTargets:
    t = PresetTargets(Random(1))
    t.slack.accepted = [slack_message(i) for i in slack_ids]
    t.teams.accepted = [{"type": "message", "attachments": [{"content": {
        "body": [{"type": "TextBlock", "text": f"event {i}"}]}}]} for i in slack_ids]
    t.pagerduty.accepted = [{"payload": {"custom_details": {"event_id": i}}} for i in pd_triggers]
    t.pagerduty.alerts = pd_alerts
    return t


def good() -> tuple[list[str], list[str], dict[str, str]]:
    a1, a2, b1 = (r.id for r in truth())
    a, b = (make_event(k).item_uid for k in ("a", "b"))
    return [a1, b1, a2, a1], [a1, b1], {a: "resolved", b: "triggered"}


def test_everything_in_order_passes_duplicates_included() -> None:
    assert targets(*good()).judge(truth()) == []


def test_a_lost_event_fails() -> None:
    slack, pd, alerts = good()
    b1 = truth()[2].id
    problems = targets([i for i in slack if i != b1], pd, alerts).judge(truth())
    assert any("chat: 1 event(s) never arrived" in p for p in problems), problems
    assert not any("before an earlier one" in p for p in problems)


def test_an_item_out_of_order_fails() -> None:
    a1, a2, b1 = (r.id for r in truth())
    _, pd, alerts = good()
    problems = targets([a2, a1, b1], pd, alerts).judge(truth())
    assert any("chat: 1 event(s) arrived before an earlier one" in p for p in problems)


def test_an_unknown_event_fails() -> None:
    slack, pd, alerts = good()
    problems = targets([*slack, "f" * 32], pd, alerts).judge(truth())
    assert any("arrived that the file sink never got" in p for p in problems), problems


def test_a_refused_payload_fails() -> None:
    t = targets(*good())
    t.teams.violations.append("content.version: '9.9'")
    assert t.judge(truth()) == ["teams: the receiver refused a payload: content.version: '9.9'"]


def test_a_pagerduty_alert_left_open_fails() -> None:
    slack, pd, alerts = good()
    a = make_event("a").item_uid
    problems = targets(slack, pd, {**alerts, a: "triggered"}).judge(truth())
    assert any("oncall: 1 PagerDuty alert(s) do not end as their item did" in p
               for p in problems), problems
