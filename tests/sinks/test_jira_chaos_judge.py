"""The chaos runs judge the Jira sink by the tickets the fake Jira holds at the end
(tests/support/chaos.py `judge_jira`): one per item the file sink heard of, done exactly when
the item's last event resolved it. This holds that judge to account: it must fail a
duplicate, a missing ticket, a ticket of no item, and a wrong final status."""

from __future__ import annotations

import time

from bridge.model import EventType
from tests.core._helpers import make_event
from tests.support.chaos import judge_jira
from tests.support.fake_jira import FakeIssue, FakeJira
from tests.support.ledger import Received

A, B = make_event("a").item_uid, make_event("b").item_uid


def truth() -> list[Received]:
    events = [make_event("a", type_=EventType.NEW, counter=1),
              make_event("a", type_=EventType.RESOLVED, counter=2),
              make_event("b", type_=EventType.NEW, counter=1)]
    return [Received.of("file", e.to_dict()) for e in events]


def jira(*tickets: tuple[str, str]) -> FakeJira:
    fake = FakeJira()
    for n, (uid, status) in enumerate(tickets, 1):
        fake.issues[f"SEC-{n}"] = FakeIssue(n, f"SEC-{n}", "SEC",
                                            {"labels": ["bridge", f"bridge-{uid}"]},
                                            time.monotonic(), status=status)
    return fake


def test_one_ticket_per_item_in_its_items_state_passes() -> None:
    assert judge_jira(jira((A, "Done"), (B, "To Do")), truth()) == []


def test_a_duplicate_fails() -> None:
    [problem] = judge_jira(jira((A, "Done"), (B, "To Do"), (B, "To Do")), truth())
    assert "1 item(s) have more than one ticket" in problem and B in problem


def test_a_missing_ticket_and_a_stray_one_fail() -> None:
    problems = judge_jira(jira((A, "Done"), ("c" * 20, "To Do")), truth())
    assert any("have no ticket" in p and B in p for p in problems)
    assert any("belong to no item" in p for p in problems)


def test_a_wrong_final_status_fails() -> None:
    [problem] = judge_jira(jira((A, "In Progress"), (B, "Done")), truth())
    assert problem.startswith("tickets: 2 ticket(s) end in a status")


def test_a_request_jira_would_refuse_fails() -> None:
    fake = jira((A, "Done"), (B, "To Do"))
    fake.violations.append("POST /rest/api/3/issue: REST v3 is only used for Cloud's search")
    assert judge_jira(fake, truth()) == [
        "tickets: Jira would have refused: POST /rest/api/3/issue: REST v3 is only used for "
        "Cloud's search"]
