"""The oracle of the chaos runs catches what it claims to catch: a checker that passes everything
would make every chaos run green. Each test feeds it a small, hand-made history."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from tests.support.ledger import Crash, Ledger, Received, Truth, expected_event_id, judge

ITEM = ("scanorbit", "finding", "f1")
LIVE = Truth(True, True, "high", "open port", "open")
LIVE_CRIT = Truth(True, True, "critical", "open port", "open")
INACTIVE = Truth(True, False, "high", "open port", "resolved")
GONE = Truth(False)


def event(type_: str, counter: int, at: float, *, severity: str = "high", sink: str = "hook",
          reason: str = "", received: float | None = None, vendor_severity: str = "") -> Received:
    body: dict[str, Any] = {
        "id": expected_event_id(*ITEM, type_, counter), "type": type_, "scope": ITEM[0],
        "kind": ITEM[1], "key": ITEM[2], "counter": counter, "severity": severity,
        "vendor_severity": vendor_severity,
        "title": "open port", "status": "open", "reason": reason,
        "occurred_at": datetime.fromtimestamp(at, UTC).isoformat(),
    }
    return Received.of(sink, body, received if received is not None else at + 0.5)


def history(*steps: tuple[float, Truth]) -> Ledger:
    ledger = Ledger()
    for at, truth in steps:
        ledger.record(at, {ITEM: truth} if truth.present else {}, [ITEM[0]])
    return ledger


def test_a_clean_history_passes() -> None:
    ledger = history((1, LIVE), (10, LIVE_CRIT), (20, INACTIVE))
    got = [event("new", 1, 2), event("changed", 2, 11, severity="critical"),
           event("resolved", 3, 21, reason="vendor status resolved")]
    v = judge(ledger, {"hook": got, "file": [*got]}, {ITEM: 3}, [])
    assert v.ok and v.events == 3 and v.deliveries == 6, v.problems


def test_a_gap_in_the_counters_is_a_lost_event() -> None:
    ledger = history((1, LIVE), (10, LIVE_CRIT), (20, INACTIVE))
    complete = [event("new", 1, 2), event("changed", 2, 11, severity="critical"),
                event("resolved", 3, 21, reason="vendor status resolved")]
    v = judge(ledger, {"hook": complete, "file": [complete[0], complete[2]]}, {ITEM: 3}, [])
    assert v.lost == 1 and "file: lost" in v.problems[0]


def test_a_missing_last_event_is_lost_even_when_no_sink_got_it() -> None:
    ledger = history((1, LIVE), (20, INACTIVE))
    v = judge(ledger, {"hook": [event("new", 1, 2)]}, {ITEM: 2}, [])
    assert v.lost == 1 and v.wrong_final == 1


def test_resolved_while_the_item_was_live_all_along_is_false() -> None:
    ledger = history((1, LIVE))
    got = [event("new", 1, 2), event("resolved", 2, 30, reason="absent from 2 consecutive "
                                                               "complete sweeps")]
    v = judge(ledger, {"hook": got}, {ITEM: 2}, [], {(ITEM[0], 30.0): 31.0})
    assert v.false_resolved == 1 and "FALSE RESOLVED" in " ".join(v.problems)


def test_resolution_by_absence_needs_the_item_gone_not_just_inactive() -> None:
    ledger = history((1, LIVE), (10, INACTIVE), (12, LIVE))
    got = [event("new", 1, 2), event("resolved", 2, 11, reason="absent from 2 consecutive "
                                                               "complete sweeps"),
           event("reopened", 3, 13)]
    assert judge(ledger, {"hook": got}, {ITEM: 3}, []).false_resolved == 1
    got[1] = event("resolved", 2, 11, reason="vendor status resolved")
    assert judge(ledger, {"hook": got}, {ITEM: 3}, []).ok


def test_a_flap_the_daemon_saw_is_a_legitimate_resolution() -> None:
    # Gone for a moment between the previous event and the end of the resolving sweep.
    ledger = history((1, LIVE), (5, GONE), (6, LIVE))
    got = [event("new", 1, 2), event("resolved", 2, 7, reason="absent from 2 consecutive "
                                                              "complete sweeps"),
           event("reopened", 3, 9)]
    assert judge(ledger, {"hook": got}, {ITEM: 3}, [], {(ITEM[0], 7.0): 8.0}).ok


def test_a_settled_state_the_events_never_pass_through_is_reported() -> None:
    ledger = history((1, LIVE))
    ledger.settle(1.5)
    ledger.record(10, {}, [ITEM[0]])  # gone, and the world held still until it was swept
    ledger.settle(10.5)
    ledger.record(20, {ITEM: LIVE_CRIT}, [ITEM[0]])
    ledger.settle(20.5)
    # The resolution in between never came: new, then straight to critical.
    got = [event("new", 1, 2), event("changed", 2, 21, severity="critical")]
    v = judge(ledger, {"hook": got}, {ITEM: 2}, [])
    assert v.skipped_states == 1 and v.lost == 0


def test_duplicates_are_allowed_only_when_a_crash_had_them_in_flight() -> None:
    ledger = history((1, LIVE))
    first = event("new", 1, 2)
    got = [first, first]
    assert judge(ledger, {"hook": got}, {ITEM: 1}, []).unexplained_duplicates == 1
    crash = Crash(3.0, "delivery", {"hook": {first.id}})
    v = judge(ledger, {"hook": got}, {ITEM: 1}, [crash])
    assert v.ok and v.duplicated == 1
    # One crash explains one extra copy, not two; and only for the sink it was in flight to.
    assert judge(ledger, {"hook": [first] * 3}, {ITEM: 1}, [crash]).unexplained_duplicates == 1
    assert not judge(ledger, {"file": got}, {ITEM: 1}, [crash]).ok


def test_an_id_that_is_not_the_documented_function_of_the_transition_is_caught() -> None:
    ledger = history((1, LIVE))
    bad = dataclasses.replace(event("new", 1, 2), id="0" * 32)
    v = judge(ledger, {"hook": [bad]}, {ITEM: 1}, [])
    assert v.id_mismatches >= 1


def test_two_different_events_for_one_transition_are_caught() -> None:
    ledger = history((1, LIVE), (10, LIVE_CRIT))
    a = event("changed", 2, 11, severity="critical")
    b = event("changed", 2, 12, severity="critical")  # same id, different content
    v = judge(ledger, {"hook": [event("new", 1, 2), a], "file": [event("new", 1, 2), b]},
              {ITEM: 2}, [])
    assert v.id_mismatches == 1


def test_an_event_describing_a_state_upstream_never_had_is_a_phantom() -> None:
    ledger = history((1, LIVE), (10, LIVE_CRIT))
    # "critical" reported by a sweep that ran before the change: a stale or invented payload.
    got = [event("new", 1, 2), event("changed", 2, 5, severity="critical")]
    v = judge(ledger, {"hook": got}, {ITEM: 2}, [], {(ITEM[0], 5.0): 6.0})
    assert v.phantom_states == 1 and not v.ok
    got[1] = event("changed", 2, 11, severity="critical")
    assert judge(ledger, {"hook": got}, {ITEM: 2}, [], {(ITEM[0], 11.0): 12.0}).ok


def test_a_vendor_severity_change_alone_must_be_reported() -> None:
    # `info` -> `trivial` normalises to the same severity, but vendor_severity is tracked.
    info = Truth(True, True, "info", "open port", "open", vendor_severity="info")
    trivial = dataclasses.replace(info, vendor_severity="trivial")
    ledger = history((1, info), (10, trivial))
    first = event("new", 1, 2, severity="info", vendor_severity="info")
    silent = judge(ledger, {"hook": [first]}, {ITEM: 1}, [])
    assert silent.wrong_final == 1 and not silent.ok
    told = [first, event("changed", 2, 11, severity="info", vendor_severity="trivial")]
    v = judge(ledger, {"hook": told}, {ITEM: 2}, [])
    assert v.ok, v.problems
