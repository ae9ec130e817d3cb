"""The digest and storm-guard policy (bridge/grouping.py) on its own: time is an argument, so
Alertmanager's semantics are checked exactly, without a clock or a socket."""

from __future__ import annotations

from typing import Any

from bridge.grouping import Digest, Grouper, GroupingSettings, Plan, StormSummary
from bridge.model import Event, EventType
from bridge.store.base import Delivery

from ._helpers import make_event

SEQ = iter(range(1, 10**9))


def rows(*events: Event) -> list[Delivery]:
    return [Delivery.of(next(SEQ), "chat", e) for e in events]


def grouper(**settings: Any) -> Grouper:
    return Grouper(GroupingSettings(**settings))


def sent(plan: Plan) -> list[tuple[str | None, list[str]]]:
    """(digest label or None for singles, event keys) per message."""
    return [(m.digest.label if m.digest else None, [d.event.key for d in m.rows])
            for m in plan.messages]


def deliver(g: Grouper, plan: Plan, now: float) -> None:
    for message in plan.messages:
        g.delivered(message.rows, now)


def test_the_first_event_waits_group_wait_for_company_then_one_digest() -> None:
    g = grouper(group_by=["source"], group_wait=10, group_interval=60)
    g.add(rows(make_event("a")), now=0)
    g.add(rows(make_event("b"), make_event("c")), now=5)
    assert g.plan(9.9).empty
    assert round(g.next_due(9) or 0, 6) == 1.0
    plan = g.plan(10)
    assert sent(plan) == [("source=so", ["a", "b", "c"])]
    assert plan.messages[0].digest is not None


def test_a_lone_event_is_sent_as_itself() -> None:
    g = grouper(group_by=["source"], group_wait=1)
    g.add(rows(make_event("a")), now=0)
    assert sent(g.plan(1)) == [(None, ["a"])]


def test_later_events_of_a_group_wait_for_the_next_group_interval() -> None:
    g = grouper(group_by=["source"], group_wait=1, group_interval=30)
    g.add(rows(make_event("a"), make_event("b")), now=0)
    deliver(g, g.plan(1), now=1)
    g.add(rows(make_event("c"), make_event("d")), now=2)
    assert g.plan(30).empty and round(g.next_due(30) or 0, 6) == 1.0
    assert sent(g.plan(31)) == [("source=so", ["c", "d"])]


def test_an_empty_group_is_forgotten_after_its_interval_then_waits_group_wait_again() -> None:
    g = grouper(group_by=["source"], group_wait=5, group_interval=30)
    g.add(rows(make_event("a")), now=0)
    deliver(g, g.plan(5), now=5)
    g.add(rows(make_event("b")), now=100)  # long after the interval: a new group
    assert g.plan(104).empty
    assert sent(g.plan(105)) == [(None, ["b"])]


def test_groups_are_keyed_by_the_group_by_values() -> None:
    g = grouper(group_by=["severity", "attributes.region"], group_wait=0)
    g.add(rows(make_event("a", severity="high", attributes={"region": "eu"}),
               make_event("b", severity="high", attributes={"region": "us"}),
               make_event("c", severity="high", attributes={"region": "eu"}),
               make_event("d", severity="low", attributes={"region": "eu"})), now=0)
    assert sorted(sent(g.plan(0)), key=str) == sorted([
        ("severity=high, attributes.region=eu", ["a", "c"]), (None, ["b", "d"])], key=str)


def test_group_by_empty_puts_everything_in_one_group_and_max_batch_splits_it() -> None:
    g = grouper(group_by=[], group_wait=0, max_batch=3)
    g.add(rows(*(make_event(f"k{i}") for i in range(7))), now=0)
    assert sent(g.plan(0)) == [("all events", ["k0", "k1", "k2"]),
                               ("all events", ["k3", "k4", "k5"]), ("all events", ["k6"])]


def test_an_items_later_event_never_overtakes_an_earlier_one_in_another_group() -> None:
    """Grouped by severity: the item's `new` (high) waits in a group not yet due, so its
    `changed` (critical), though its own group is due, waits too."""
    g = grouper(group_by=["severity"], group_wait=10)
    (new,) = rows(make_event("x", severity="high"))
    g.add([new], now=0)
    g.add(rows(make_event("y", severity="critical")), now=0)
    g.add(rows(make_event("x", type_=EventType.CHANGED, counter=2, severity="critical")), now=5)
    g.add(rows(make_event("z", severity="high")), now=9)
    # At 10 both groups are due: x's two events must not go in different messages.
    plan = g.plan(10)
    messages = sent(plan)
    assert ("severity=high", ["x", "z"]) in messages
    assert (None, ["y"]) in messages and len(messages) == 2
    deliver(g, plan, now=10)
    assert g.plan(10).empty
    assert sent(g.plan(310)) == [(None, ["x"])]  # the `changed`, after the `new` went


def test_without_group_by_every_event_goes_at_once_in_order() -> None:
    g = grouper(max_events_per_minute=100)
    chain = rows(make_event("x"), make_event("x", type_=EventType.CHANGED, counter=2),
                 make_event("y"))
    g.add(chain, now=0)
    assert sent(g.plan(0)) == [(None, ["x", "x", "y"])]


def test_the_storm_guard_sets_the_excess_aside_and_summarises_it_once_per_interval() -> None:
    g = grouper(max_events_per_minute=5, summary_interval=20, summary_top=3)
    g.add(rows(*(make_event(f"k{i}", severity="critical" if i % 4 == 0 else "low")
                 for i in range(12))), now=0)
    plan = g.plan(0)
    assert plan.engaged and sent(plan) == [(None, ["k0", "k1", "k2", "k3", "k4"])]
    deliver(g, plan, now=0)
    assert g.storm_pending == 7 and g.plan(19).empty and round(g.next_due(19) or 0, 6) == 1
    summary = g.plan(20)
    assert [d.event.key for d in summary.summary] == [f"k{i}" for i in range(5, 12)]
    assert not summary.messages
    assert [d.event.key for d in g.summarised()] == [f"k{i}" for i in range(5, 12)]
    # Still within the minute: the guard stays engaged for what comes next.
    g.add(rows(make_event("late")), now=30)
    again = g.plan(30)
    assert again.engaged and not again.messages and g.storm_pending == 1
    # A minute after the five were sent, events flow again (after the due summary).
    g.add(rows(make_event("later")), now=61)
    assert [d.event.key for d in g.plan(61).summary] == ["late"]
    g.summarised()
    assert sent(g.plan(61)) == [(None, ["later"])]


def test_an_item_with_an_event_set_aside_waits_for_the_summary() -> None:
    g = grouper(max_events_per_minute=1, summary_interval=10)
    g.add(rows(make_event("a"), make_event("x")), now=0)
    deliver(g, g.plan(0), now=0)  # a goes; x is set aside
    g.add(rows(make_event("x", type_=EventType.RESOLVED, counter=2)), now=70)  # budget again
    assert g.plan(70).summary  # the summary (with x's `new`) goes first...
    g.summarised()
    assert sent(g.plan(70)) == [(None, ["x"])]  # ...then x's `resolved`


def test_a_full_buffer_sends_waiting_groups_early() -> None:
    g = grouper(group_by=["source"], group_wait=300, group_buffer=10)
    g.add(rows(*(make_event(f"k{i}") for i in range(10))), now=0)
    assert g.room == 0
    assert sent(g.plan(1)) == [("source=so", [f"k{i}" for i in range(10)])]


def test_failed_attempts_are_counted_in_memory_like_in_the_store() -> None:
    g = grouper(group_by=["source"], group_wait=0)
    batch = rows(make_event("a"), make_event("b"))
    g.add(batch, now=0)
    g.spent(batch)
    assert [d.attempts for d in g.plan(0).messages[0].rows] == [1, 1]


def test_digest_and_summary_identities_are_deterministic() -> None:
    events = (make_event("a", severity="low"), make_event("b", severity="critical"))
    group = (("source", "so"),)
    assert Digest(group, events).id == Digest(group, events).id != Digest(group, events[:1]).id
    assert Digest(group, events).key == Digest(group, events[:1]).key  # the group's, stable
    assert Digest(group, events).worst.key == "b"
    summary = StormSummary("chat", events * 3, limit=60, top_n=2)
    assert summary.by_severity == {"critical": 3, "low": 3}
    assert summary.by_source == {"so": 6}
    assert [e.key for e in summary.top] == ["b", "b"]


def test_group_by_names_event_fields() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown event field 'sevrity'"):
        GroupingSettings(group_by=["sevrity"])
    assert GroupingSettings(group_by=["attributes.region"]).grouping
    assert not GroupingSettings().grouping
