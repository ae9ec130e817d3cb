"""An outbox body is checked, not decoded, when it is claimed (`check_event_body`): the check
must refuse exactly the bodies that `Event.from_json` refuses, or a claimed delivery could fail
to decode later, inside a sink, instead of being dead-lettered at once."""

from __future__ import annotations

import msgspec
import orjson
import pytest
from hypothesis import given, settings

from bridge.model import Event, check_event_body
from tests.syslog.events import adversarial_events
from tests.syslog.strategies import events

from ._helpers import make_event


def decodes(body: str) -> bool:
    try:
        Event.from_json(body)
    except msgspec.MsgspecError:
        return False
    return True


def passes(body: str) -> bool:
    try:
        check_event_body(body)
    except msgspec.MsgspecError:
        return False
    return True


def damaged(event: Event) -> list[str]:
    """The event's JSON, and one damaged copy per way a body can go wrong."""
    good = orjson.loads(event.to_json())
    bodies = [event.to_json(), '{"id": "cut short', "[]", "null", '"text"']
    for name, value in [("id", 7), ("type", "exploded"), ("severity", "apocalyptic"),
                        ("occurred_at", "yesterday"), ("counter", "one"), ("changes", []),
                        ("changes", {"title": ["a"]}), ("attributes", {"ports": [22]}),
                        ("attributes", []), ("raw", []), ("raw", "text"), ("raw", None),
                        ("raw", {"deep": [[{"ok": True}]]}), ("tenant", None),
                        ("severity_score", "ignored"), ("unknown", "ignored")]:
        bodies.append(orjson.dumps({**good, name: value}).decode())
    for name in ("id", "type", "counter", "raw", "attributes", "item_uid"):
        bodies.append(orjson.dumps({k: v for k, v in good.items() if k != name}).decode())
    return bodies


@pytest.mark.parametrize("body", damaged(make_event("a", attributes={"n": 1}, raw={"x": [1]})))
def test_the_check_refuses_exactly_what_decoding_refuses(body: str) -> None:
    assert passes(body) == decodes(body)


@settings(max_examples=80, deadline=None)
@given(events())
def test_every_event_passes_and_the_check_names_its_id(event: Event) -> None:
    for body in damaged(event):
        assert passes(body) == decodes(body)
    assert check_event_body(event.to_json()) == event.id


def test_hostile_events_pass_and_name_their_ids() -> None:
    for event in adversarial_events():
        assert check_event_body(event.to_json()) == event.id
