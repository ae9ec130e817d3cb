"""`group_by`: one Jira ticket per group of items, listing them in a table; items joining or
resolving comment and rewrite the table; the ticket resolves with its last item and reopens
when one returns. Against the strict fake Jira, with a real SQLite ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.model import Event, EventType
from bridge.sinks.base import DestinationUnavailableError
from bridge.sinks.jira.config import JiraSinkConfig
from bridge.sinks.jira.ledger import identity
from bridge.sinks.jira.service import JiraSink
from bridge.store.sqlite import SQLiteStore
from tests.core._helpers import make_event
from tests.support.fake_jira import FakeIssue, FakeJira

pytestmark = pytest.mark.timeout(60)
GROUP_BY = ["scope", "attributes.test_id"]


def event(key: str, type_: EventType, counter: int, test: str = "T1", **kw: Any) -> Event:
    return make_event(key, type_=type_, counter=counter, attributes={"test_id": test}, **kw)


@pytest.fixture
async def sink(store: SQLiteStore) -> AsyncIterator[tuple[JiraSink, FakeJira]]:
    """An open sink grouping by GROUP_BY, its ledger in the suite's SQLite `store`."""
    fake = await FakeJira(mode="datacenter").start()
    s = JiraSinkConfig.model_validate({"name": "jira", "type": "jira", **fake.sink_settings(),
                                       "group_by": GROUP_BY}).build()
    s.use_store(store)
    await s.open()
    try:
        yield s, fake
    finally:
        await s.close()
        await fake.stop()
    assert fake.violations == []


def group_ticket(fake: FakeJira, e: Event) -> FakeIssue:
    return fake.ticket(identity(e, GROUP_BY)[1])


async def test_a_group_has_one_ticket_that_follows_its_items(
        sink: tuple[JiraSink, FakeJira]) -> None:
    s, fake = sink
    a, b = event("a", EventType.NEW, 1, severity="medium"), event("b", EventType.NEW, 1)
    await s.send([a, b])  # two items of a new group at once: still one create
    ticket = group_ticket(fake, a)
    assert len(fake.tickets()) == 1 and fake.count("POST /rest/api/2/issue") == 1
    assert "finding a" in ticket.fields["description"]
    assert "finding b" in ticket.fields["description"]
    assert ticket.fields["priority"] == {"name": "High"}  # the worst active item's
    assert "Item joined" in ticket.comments[-1]

    await s.send([event("c", EventType.NEW, 1, test="T2")])  # another group, another ticket
    assert len(fake.tickets()) == 2

    await s.send([event("a", EventType.RESOLVED, 2, severity="medium", reason="test passed")])
    assert ticket.status == "To Do" and "1 still active" in ticket.comments[-1]
    assert "|resolved|" in ticket.fields["description"]

    await s.send([event("b", EventType.RESOLVED, 2, reason="test passed in scan 7")])
    assert (ticket.status, ticket.resolution) == ("Done", "Done")
    assert "test passed in scan 7" in ticket.comments[-1]
    assert "last active item of 2" in ticket.comments[-1]

    await s.send([event("a", EventType.REOPENED, 3, severity="medium")])
    assert ticket.status == "To Do" and "Item returned" in ticket.comments[-1]
    assert len(fake.tickets()) == 2 and fake.count("POST /rest/api/2/issue") == 2
    assert fake.count("GET /rest/api/2/search") == 0


async def test_a_group_closed_as_wont_do_stays_closed(sink: tuple[JiraSink, FakeJira]) -> None:
    s, fake = sink
    a = event("a", EventType.NEW, 1)
    await s.send([a, event("a", EventType.RESOLVED, 2)])
    ticket = group_ticket(fake, a)
    fake.close_as(ticket.key, "Duplicate", by="Sam")  # a person's later decision
    await s.send([event("a", EventType.REOPENED, 3)])
    assert (ticket.status, ticket.resolution) == ("Done", "Duplicate")
    assert "not reopened" in ticket.comments[-1]
    assert s.store is not None
    [silence] = await s.store.silences()
    assert '"attributes.test_id"' in silence.matchers and silence.author == "Sam"


async def test_a_group_without_a_value_is_accepted_without_a_silence(
        sink: tuple[JiraSink, FakeJira]) -> None:
    """A silence pinned to an empty group value would mute the reopened events of every item
    without that attribute: the acceptance is then kept in the ledger only."""
    s, fake = sink
    a = make_event("a", type_=EventType.NEW, counter=1)  # no attributes.test_id
    await s.send([a, make_event("a", type_=EventType.RESOLVED, counter=2)])
    ticket = group_ticket(fake, a)
    fake.close_as(ticket.key, "Won't Fix")
    reopened = make_event("a", type_=EventType.REOPENED, counter=3)
    await s.send([reopened])
    assert ticket.status == "Done" and "not reopened" in ticket.comments[-1]
    assert s.store is not None and await s.store.silences() == []
    [ref] = await s.store.sink_refs("jira")
    assert ref.state == "accepted"
    comments = len(ticket.comments)
    await s.send([reopened])  # still accepted: nothing more for Jira
    assert len(ticket.comments) == comments


async def test_a_group_ticket_found_after_a_lost_create_still_knows_its_group(
        sink: tuple[JiraSink, FakeJira]) -> None:
    """The create's answer is lost; the ticket found later by its label must still list the
    group's first item and know the group's values (its table, a later silence)."""
    s, fake = sink
    fake.drop_creates = 1
    a, b = event("a", EventType.NEW, 1), event("b", EventType.NEW, 1)
    with pytest.raises(DestinationUnavailableError):
        await s.send([a])
    assert s.store is not None
    again = JiraSinkConfig.model_validate({
        **s.config.model_dump(), "token": fake.token, "search_horizon": 0}).build()
    again.use_store(s.store)  # a restarted bridge: it must search for the intent's ticket
    try:
        await again.send([a])  # found by its label, not created again
        await again.send([b])
    finally:
        await again.close()
    ticket = group_ticket(fake, a)
    assert len(fake.tickets()) == 1
    assert "finding a" in ticket.fields["description"]
    assert "finding b" in ticket.fields["description"]
    [ref] = await s.store.sink_refs("jira")
    assert '"attributes.test_id":"T1"' in ref.value
