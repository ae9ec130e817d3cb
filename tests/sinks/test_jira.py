"""The Jira sink against the strict fake Jira (tests/support/fake_jira.py), in Cloud and Data
Center modes, with a real SQLite state file for its ledger: the life cycle of one ticket per
item, a transition that needs a resolution, a person's Won't Do, a ticket deleted under us,
startup checks, Jira's errors, and the create whose answer is lost (one ticket, found by its
label once the search horizon has passed, never a second create)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bridge.baseline import summary_event
from bridge.model import Event, EventType, utcnow
from bridge.secrets import redact
from bridge.silences import SilenceService
from bridge.sinks.base import (
    DestinationUnavailableError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    ThrottledError,
)
from bridge.sinks.jira.checks import StartupCheckFailed
from bridge.sinks.jira.config import JiraSinkConfig
from bridge.sinks.jira.ledger import identity
from bridge.sinks.jira.service import JiraSink
from bridge.store.base import Store
from bridge.store.sqlite import SQLiteStore
from tests.core._helpers import make_event
from tests.support.fake_jira import FakeJira, Mode
from tests.support.postgres import PgSchema
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def lifecycle(key: str = "k1", **kw: Any) -> list[Event]:
    return [make_event(key, type_=EventType.NEW, counter=1, severity="high", **kw),
            make_event(key, type_=EventType.CHANGED, counter=2, severity="critical",
                       changes={"severity": ("high", "critical")}, **kw),
            make_event(key, type_=EventType.RESOLVED, counter=3, severity="critical",
                       reason="absent from 3 complete sweeps", **kw),
            make_event(key, type_=EventType.REOPENED, counter=4, severity="critical",
                       reason="active again", **kw)]


def jira_config(fake: FakeJira, **kw: Any) -> JiraSinkConfig:
    return JiraSinkConfig.model_validate({"name": "jira", "type": "jira", **fake.sink_settings(),
                                          "search_horizon": 0.3, **kw})


def built(fake: FakeJira, store: Store, **kw: Any) -> JiraSink:
    """A sink for `fake` with its ledger in `store`, not yet open (its startup checks run in
    `open`)."""
    sink = jira_config(fake, **kw).build()
    sink.use_store(store)
    return sink


def label_of(event: Event) -> str:
    return identity(event, None)[1]


@pytest.fixture(params=["cloud", "datacenter"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeJira]:
    jira = await FakeJira(mode=request.param).start()
    try:
        yield jira
    finally:
        await jira.stop()
        assert jira.violations == []


@asynccontextmanager
async def opened(fake: FakeJira, store: Store, **kw: Any) -> AsyncIterator[JiraSink]:
    """A sink past its startup checks, closed when the block ends (however it ends); a sink
    whose `open` fails is not closed here, as before."""
    sink = built(fake, store, **kw)
    await sink.open()
    try:
        yield sink
    finally:
        await sink.close()


async def test_one_ticket_follows_the_item_through_its_life(
        fake: FakeJira, store: SQLiteStore) -> None:
    async with opened(fake, store) as sink:
        new, changed, resolved, reopened = lifecycle()
        await sink.send([new])
        ticket = fake.ticket(label_of(new))
        assert ticket.fields["priority"] == {"name": "High"}
        assert "bridge" in ticket.labels and ticket.fields["summary"] == "[HIGH] finding k1"
        assert "||Field||Value||" in ticket.fields["description"]
        assert fake.count("POST /rest/api/2/issue") == 1

        await sink.send([changed])
        assert "high → critical" in ticket.comments[-1]
        assert ticket.fields["priority"] == {"name": "Highest"}

        await sink.send([resolved])
        assert (ticket.status, ticket.resolution) == ("Done", "Done")
        assert "absent from 3 complete sweeps" in ticket.comments[-1]

        await sink.send([reopened])
        assert (ticket.status, ticket.resolution) == ("To Do", None)
        assert "active again" in ticket.comments[-1]
        await sink.send([new, resolved])  # a replay changes nothing but the status
        assert len(fake.tickets()) == 1
        assert fake.count("GET /rest/api/3/search/jql") + fake.count(
            "GET /rest/api/2/search") == 0  # the ledger knew every ticket


async def test_a_transition_needing_a_resolution_gets_the_configured_one(
        fake: FakeJira, store: SQLiteStore) -> None:
    async with opened(fake, store, resolve_fields={"resolution": "Cannot Reproduce"}) as sink:
        new, _, resolved, _ = lifecycle()
        await sink.send([new, resolved])
        assert fake.ticket(label_of(new)).resolution == "Cannot Reproduce"
    async with opened(fake, store, resolve_fields={}) as sink:
        new, _, resolved, _ = lifecycle("k2")
        await sink.send([new])
        with pytest.raises(PermanentDeliveryError, match="requires the field 'resolution'"):
            await sink.send([resolved])
        assert fake.ticket(label_of(new)).status == "To Do"


async def test_a_person_closing_as_wont_do_is_respected_and_recorded_as_a_silence(
        fake: FakeJira, store: SQLiteStore) -> None:
    async with opened(fake, store) as sink:
        new, changed, resolved, reopened = lifecycle()
        await sink.send([new])
        ticket = fake.ticket(label_of(new))
        fake.close_as(ticket.key, "Won't Do", by="Dana Reviewer")
        await sink.send([resolved, reopened])
        assert (ticket.status, ticket.resolution) == ("Done", "Won't Do")
        assert "closed as *Won't Do* by Dana Reviewer: not reopened" in ticket.comments[-1]
        [silence] = await SilenceService(store).list()  # what `bridge silence list` shows
        assert silence.record.author == "Dana Reviewer" and silence.record.origin == "jira:jira"
        assert f"Jira {ticket.key} closed as Won't Do" == silence.record.reason
        assert silence.matches(reopened) and not silence.matches(changed)
        assert not silence.matches(lifecycle("other")[3])

        comments = len(ticket.comments)
        await sink.send([reopened])  # accepted: Jira hears nothing more
        assert len(ticket.comments) == comments and ticket.status == "Done"

        await sink.send([changed])  # its tracked fields changed: the decision is revisited
        assert ticket.status == "To Do"
        assert "changed since" in ticket.comments[-1]
        assert [s.expired_at is not None for s in await store.silences()] == [True]


async def test_a_deleted_ticket_is_recreated_only_when_configured(
        fake: FakeJira, store: SQLiteStore) -> None:
    async with opened(fake, store) as sink:
        new, changed, _, _ = lifecycle()
        await sink.send([new])
        fake.delete(fake.ticket(label_of(new)).key)
        await sink.send([changed])
        assert fake.tickets() == []
        [ref] = await store.sink_refs("jira")
        assert ref.state == "gone"
    async with opened(fake, store, recreate_missing=True) as sink:
        new, _, resolved, reopened = lifecycle("k2")
        await sink.send([new, resolved])
        moved_to = fake.move(fake.ticket(label_of(new)).key, "OPS")
        await sink.send([reopened])  # Jira answers the old key with the moved ticket
        [recreated] = [t for t in fake.tickets(label_of(new)) if t.project == fake.project]
        assert recreated.key != moved_to


async def test_a_dropped_create_answer_makes_one_ticket(fake: FakeJira,
                                                        store: SQLiteStore) -> None:
    """Jira commits the create and the connection drops: the package must not re-send it
    (max_retries=0), and the next attempt finds the ticket by its label once the horizon has
    passed and the lagging search index shows it, instead of creating a second one."""
    fake.search_lag = 0.2
    fake.drop_creates = 1
    async with opened(fake, store) as sink:
        new, changed, _, _ = lifecycle()
        with pytest.raises(DestinationUnavailableError):
            await sink.send([new])
        assert len(fake.tickets()) == 1 and fake.count("POST /rest/api/2/issue") == 1
        [intent] = await store.sink_refs("jira")
        assert intent.state == "intent"

        with pytest.raises(ThrottledError) as waited:  # too early to trust the search
            await sink.send([new])
        assert waited.value.retry_after is not None and 0 < waited.value.retry_after <= 0.3
        fake_clock = intent.updated_at
        await _until_older(fake_clock, 0.35)
        await sink.send([new, changed])
        assert len(fake.tickets()) == 1 and fake.count("POST /rest/api/2/issue") == 1
        [ref] = await store.sink_refs("jira")
        assert ref.state == "ticket" and fake.tickets()[0].key in ref.value
        assert "high → critical" in fake.tickets()[0].comments[-1]


async def test_an_intent_not_found_is_searched_twice_then_created(
        fake: FakeJira, store: SQLiteStore) -> None:
    async with opened(fake, store, search_horizon=0.0) as sink:
        fake.fail = [502]  # the create never reached Jira's database
        new = lifecycle()[0]
        with pytest.raises(RetryableDeliveryError):
            await sink.send([new])
        assert fake.tickets() == []
        with pytest.raises(ThrottledError, match="searching once more"):
            await sink.send([new])
        await sink.send([new])
        assert len(fake.tickets(label_of(new))) == 1
        searches = fake.count("GET /rest/api/3/search/jql") + fake.count("GET /rest/api/2/search")
        assert searches == 2


async def _until_older(since: Any, seconds: float) -> None:
    await wait_until(lambda: (utcnow() - since).total_seconds() > seconds, 5,
                     "the intent to pass the search horizon")


@pytest.mark.parametrize("mode", ["cloud", "datacenter"])
async def test_the_label_search_walks_every_page(mode: Mode) -> None:
    """Cloud pages by nextPageToken (its old /search answers 410), Data Center by startAt."""
    fake = await FakeJira(mode=mode, page_cap=2).start()
    try:
        sink = jira_config(fake).build()
        await sink.open()
        assert sink.client is not None
        for n in range(5):
            await sink.client.create({"project": {"id": "10000"}, "issuetype": {"id": "10001"},
                                      "summary": f"dup {n}", "labels": ["bridge-same"]})
        found = await sink.client.search_label("bridge-same")
        assert sorted(found) == sorted(t.key for t in fake.tickets())
        route = "GET /rest/api/3/search/jql" if mode == "cloud" else "GET /rest/api/2/search"
        assert fake.count(route) == 3
        await sink.close()
    finally:
        await fake.stop()
    assert fake.violations == []


async def test_configured_transition_names_are_used_and_a_missing_one_is_refused(
        fake: FakeJira, store: SQLiteStore) -> None:
    async with opened(fake, store, resolve_transition="Close",
                      reopen_transition="Back to To Do") as sink:
        new, _, resolved, reopened = lifecycle()
        await sink.send([new, resolved, reopened])
        ticket = fake.ticket(label_of(new))
        assert [h["items"][0]["toString"] for h in ticket.history] == ["Done", "To Do"]
    async with opened(fake, store, resolve_transition="Ship it") as sink:
        new, _, resolved, _ = lifecycle("k2")
        await sink.send([new])
        with pytest.raises(PermanentDeliveryError, match="offers no transition 'Ship it'"):
            await sink.send([resolved])


async def test_errors_map_onto_the_sink_contract(fake: FakeJira, store: SQLiteStore) -> None:
    async with opened(fake, store) as sink:
        fake.throttle = [7]
        with pytest.raises(ThrottledError) as throttled:
            await sink.send([lifecycle("a")[0]])
        assert throttled.value.retry_after == 7
        await sink.send([lifecycle("a")[0]])  # a 429 created nothing: no search needed
        assert len(fake.tickets()) == 1
        assert fake.count("GET /rest/api/3/search/jql") + fake.count(
            "GET /rest/api/2/search") == 0
        fake.fail = [500]
        with pytest.raises(RetryableDeliveryError) as failed:
            await sink.send([lifecycle("b")[0]])
        assert not isinstance(failed.value, ThrottledError | DestinationUnavailableError)
        bad = make_event("c", title="x" * 10)
        sink.config.priorities["high"] = "Nope"  # what Jira refuses: a 400, dead-lettered
        with pytest.raises(PermanentDeliveryError, match="priority: Specify the Priority"):
            await sink.send([bad])
        sink.config.priorities["high"] = "High"
        fake.token = "rotated"
        with pytest.raises(DestinationUnavailableError, match="HTTP 401"):
            await sink.send([lifecycle("d")[0]])


async def test_startup_checks_name_what_is_wrong(fake: FakeJira, store: SQLiteStore) -> None:
    other = "datacenter" if fake.mode == "cloud" else "cloud"
    checks: list[tuple[dict[str, Any], str]] = [
        ({"priorities": {"critical": "Blocker"}},
         r"priorities failed: no such priority in Jira: critical → 'Blocker'"),
        ({"issue_type": "Epic"}, "issue_type failed: project SEC has no issue type 'Epic'"),
        ({"project": "NOPE"}, "project failed: .*No project could be found"),
        ({"custom_fields": {"CVSS": "{{ severity }}"}}, "fields failed: .*CVSS"),
        ({"deployment": other, "email": "x@example.com", "api_token": "t", "token": "t"},
         f"server failed: .* is Jira {'Cloud' if fake.mode == 'cloud' else 'Server'}, but "
         f"the sink says deployment: {other}")]
    for settings, problem in checks:
        sink = built(fake, store, **settings)
        with pytest.raises(StartupCheckFailed, match=problem):
            await sink.open()
        await sink.close()
    sink = built(fake, store)
    fake.token = "rotated-elsewhere"
    with pytest.raises(StartupCheckFailed, match="auth failed: myself: HTTP 401") as err:
        await sink.open()
    assert not isinstance(err.value, PermanentDeliveryError)  # no attempt is spent on it
    secret = (sink.config.api_token or sink.config.token)
    assert secret is not None and secret.get_secret_value() not in redact(str(err.value))
    await sink.close()


async def test_custom_fields_resolve_to_their_ids(fake: FakeJira, store: SQLiteStore) -> None:
    async with opened(fake, store, custom_fields={"Risk Score": "{{ counter * 10 }}"}) as sink:
        event = lifecycle()[0]
        await sink.send([event])
        assert fake.ticket(label_of(event)).fields["customfield_10100"] == 10


async def test_a_baseline_summary_is_one_informational_ticket(
        fake: FakeJira, store: SQLiteStore) -> None:
    async with opened(fake, store) as sink:
        summary = summary_event(scope="scanorbit", source="scanorbit", vendor="scanorbit",
                                sink="jira", counts={("finding", "critical"): 40,
                                                     ("finding", "low"): 2})
        await sink.send([summary])
        await sink.send([summary])  # a replayed commit sends the same summary
        [ticket] = fake.tickets()
        assert ticket.fields["summary"].startswith("[CRITICAL] Baseline of scanorbit: 42")
        assert ticket.fields["priority"] == {"name": "Lowest"}
        assert "|Severity critical|40|" in ticket.fields["description"]


async def test_a_redirect_is_never_followed(fake: FakeJira, store: SQLiteStore) -> None:
    """The credentials must not travel to wherever Jira (or a proxy in front) points."""
    elsewhere = await FakeJira(mode=fake.mode).start()
    try:
        fake.redirect = f"{elsewhere.url}/rest/api/2/serverInfo"
        sink = built(fake, store)
        with pytest.raises(StartupCheckFailed, match="redirect, and the sink follows none"):
            await sink.open()
        await sink.close()
        assert sum(elsewhere.requests.values()) == 0
    finally:
        await elsewhere.stop()


async def test_the_ledger_lives_in_postgresql_too(pg: PgSchema) -> None:
    """The same ledger through the PostgreSQL store: a lost create settled by its label, the
    life cycle without searches, and a Won't Do written with its silence in one transaction."""
    fake = await FakeJira(mode="cloud", search_lag=0.1).start()
    store = pg.store()
    await store.open()
    try:
        fake.drop_creates = 1
        sink = built(fake, store, search_horizon=0.2)
        new, changed, resolved, reopened = lifecycle()
        with pytest.raises(DestinationUnavailableError):
            await sink.send([new])
        [intent] = await store.sink_refs("jira")
        await _until_older(intent.updated_at, 0.25)
        await sink.send([new, changed, resolved])
        ticket = fake.ticket(label_of(new))
        assert ticket.status == "Done" and fake.count("POST /rest/api/2/issue") == 1
        fake.close_as(ticket.key, "Won't Do")
        await sink.send([reopened])
        [ref] = await store.sink_refs("jira")
        assert ref.state == "accepted" and ticket.status == "Done"
        [silence] = await store.silences()
        assert silence.origin == "jira:jira"
        await sink.close()
    finally:
        await store.close()
        await fake.stop()
    assert fake.violations == []
