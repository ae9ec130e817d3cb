"""Grouping per route (Alertmanager's): a route's `group_by`, `group_wait`, `group_interval`
and `max_batch` override the sink's for the events it sends there, child routes inherit them
field by field, and two routes never share a group. The route tree decides at the worker, from
the outbox rows, so a restart re-forms the same groups: nothing lost, nothing sent twice."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from pydantic import ValidationError

from bridge.grouping import Digest, Grouper, GroupingSettings, GroupRule, RouteGrouping
from bridge.model import EventType
from bridge.outbox import SinkWorker
from bridge.routing import RouteConfig, grouped_sinks, grouping_rules, route
from bridge.sinks.syslog import SyslogSinkConfig
from bridge.sinks.webhook import WebhookSinkConfig
from bridge.store.base import Delivery
from bridge.store.sqlite import SQLiteStore
from tests.core._helpers import make_event
from tests.support.daemon import run_cli
from tests.support.receiver import Receiver
from tests.support.sink_contract import commit
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

TREE: dict[str, Any] = {
    "sinks": ["hook"],
    "group_wait": 3600,  # inherited by both children unless they set their own
    "routes": [
        {"name": "paging", "match": {"severity": ">= high"}, "group_by": ["severity"],
         "group_wait": 0.05, "max_batch": 2, "continue": False},
        {"name": "noise", "match": {"severity": "low"}, "group_by": ["source"],
         "routes": [{"match": {"tenant": "t9"}, "sinks": ["hook", "other"]}]},
    ],
}


def tree(data: dict[str, Any] | None = None) -> RouteConfig:
    return RouteConfig.model_validate(data or TREE)


def settings(**kw: Any) -> GroupingSettings:
    return GroupingSettings.model_validate(kw)


# -- the route tree says, purely ----------------------------------------------------------

def test_a_route_sets_grouping_for_the_sinks_it_chose_and_children_inherit_it() -> None:
    high = route(tree(), make_event("a", severity="critical")).groupings["hook"]
    assert (high.route, high.group_by, high.group_wait, high.max_batch) == (
        "paging", ("severity",), 0.05, 2)
    low = route(tree(), make_event("b", severity="low", tenant="t9")).groupings
    # The unnamed child route inherits `group_by` from "noise" and `group_wait` from the root,
    # for both sinks it names; it is known by its place in the tree.
    assert set(low) == {"hook", "other"}
    assert (low["other"].route, low["other"].group_by, low["other"].group_wait,
            low["other"].group_interval) == ("routes.routes[1].routes[0]", ("source",), 3600,
                                             None)
    assert grouped_sinks(tree()) == {"hook", "other"}
    assert grouped_sinks(tree({"sinks": ["hook"], "routes": [{"match": {"type": "new"}}]})) \
        == set()


def test_what_a_route_leaves_unset_comes_from_the_sink() -> None:
    sink = settings(group_by=["tenant"], group_wait=7, group_interval=70, max_batch=9)
    assert sink.rule() == GroupRule(None, ("tenant",), 7, 70, 9)
    rules = grouping_rules(tree({"sinks": ["hook"], "routes": [
        {"name": "r", "match": {"severity": "critical"}, "group_interval": 5}]}), "hook", sink)
    assert rules is not None
    assert rules(make_event("a", severity="critical")) == GroupRule("r", ("tenant",), 7, 5, 9)
    assert rules(make_event("b", severity="low")) == sink.rule()  # not routed by "r"
    assert grouping_rules(tree(), "elsewhere", sink) is None


@settings_(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["critical", "high", "low"]),
                          st.sampled_from(["t1", "t2", ""]), st.sampled_from(["x", "test y"])),
                min_size=1, max_size=30))
def test_the_worker_gets_the_rule_the_route_tree_says_for_every_event(
        fields: list[tuple[str, str, str]]) -> None:
    """`grouping_rules` looks a rule up once per combination of the fields the matchers read:
    whatever the events, it says what routing each one afresh says."""
    routes = tree({"sinks": ["hook"], "group_wait": 5, "routes": [
        {"name": "tests", "match": {"title": "=~ test.*"}, "group_by": []},
        {"name": "paging", "match": {"severity": ">= high", "tenant": "t1"},
         "group_by": ["tenant"], "continue": True},
        {"match": {"tenant": ["t2"]}, "max_batch": 3}]})
    sink = settings(group_by=["severity"], group_interval=30)
    rules = grouping_rules(routes, "hook", sink)
    assert rules is not None
    for severity, tenant, title in fields * 2:  # each combination twice: cached the 2nd time
        event = make_event("k", severity=severity, tenant=tenant, title=title)
        assert rules(event) == sink.rule(route(routes, event).groupings.get("hook"))


def test_a_route_grouping_on_an_unknown_field_names_its_path() -> None:
    with pytest.raises(ValidationError) as info:
        tree({"sinks": ["hook"], "routes": [{"match": {"type": "new"}, "group_by": ["colour"]}]})
    (error,) = info.value.errors()
    assert error["loc"] == ("routes", 0, "group_by") and "unknown event field" in error["msg"]


def rows(*events: Any) -> list[Delivery]:
    return [Delivery.of(i + 1, "hook", e) for i, e in enumerate(events)]


def test_two_routes_with_equal_values_form_two_groups_with_their_own_waits_and_sizes() -> None:
    """The grouper, with time as an argument: a route's group_wait and max_batch apply to its
    own group only, and a digest's key names its route (PagerDuty incidents stay apart)."""
    by_type = {"new": GroupRule("fast", ("source",), 1, 60, 2),
               "changed": GroupRule("slow", ("source",), 10, 60, 50)}
    grouper = Grouper(settings(group_by=[]), lambda e: by_type[e.type.value])
    fast = [make_event(f"f{i}") for i in range(3)]
    slow = [make_event(f"s{i}", type_=EventType.CHANGED, counter=2) for i in range(2)]
    grouper.add(rows(*fast, *slow), now=0)
    assert grouper.plan(0.5).empty
    plan = grouper.plan(1)
    sent = [(m.digest.route if m.digest else None, [d.event.key for d in m.rows])
            for m in plan.messages]
    assert sent == [("fast", ["f0", "f1"]), ("fast", ["f2"])]
    assert grouper.next_due(1) == 9
    grouper.delivered([d for m in plan.messages for d in m.rows], now=1)
    (later,) = grouper.plan(10).messages
    assert later.digest is not None and later.digest.route == "slow"
    assert [d.event.key for d in later.rows] == ["s0", "s1"]
    same_values = (("source", "so"),)
    assert Digest(same_values, tuple(fast), "fast").key != Digest(same_values, tuple(fast),
                                                                  "slow").key
    assert Digest(same_values, tuple(fast)).key == Digest(same_values, tuple(slow)).key


# -- through the real worker, a real SQLite outbox and a real receiver --------------------

def hook(rx: Receiver, **kw: Any) -> Any:
    return WebhookSinkConfig.model_validate({
        "type": "webhook", "name": "hook", "url": rx.url, "timeout": 5,
        "backoff_initial": 0.001, "backoff_max": 0.01, **kw}).build()


async def depth(store: SQLiteStore) -> int:
    return {s.sink: s.depth for s in await store.queue_stats()}.get("hook", 0)


async def test_a_sink_without_grouping_sends_a_routes_digests_and_the_rest_one_by_one(
        store: SQLiteStore, receiver: Receiver) -> None:
    events = [make_event("c1", severity="critical"), make_event("m1", severity="medium"),
              make_event("c2", severity="critical"), make_event("h1", severity="high"),
              make_event("c3", severity="critical")]
    await commit(store, events, "hook")
    routes = tree({"sinks": ["hook"], "routes": [
        {"name": "paging", "match": {"severity": ">= high"}, "group_by": ["severity"],
         "group_wait": 0.05}]})
    worker = SinkWorker(hook(receiver), store, routes=routes)
    assert worker.grouper is not None  # the sink has no grouping; its route has
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await receiver.wait_until(lambda: len(receiver.received) == 3, timeout=20)
        await wait_until(lambda: worker.delivered == 5, 20, "every event acknowledged")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    bodies = {r.id: r.body for r in receiver.received}
    digest = next(b for i, b in bodies.items() if i.startswith("dg-"))
    assert (digest["route"], digest["group"], [e["key"] for e in digest["events"]]) == (
        "paging", {"severity": "critical"}, ["c1", "c2", "c3"])
    assert bodies[events[1].id]["key"] == "m1"  # not routed by "paging": sent as itself
    assert bodies[events[3].id]["key"] == "h1"  # a group of one: sent as itself
    assert await depth(store) == 0 and await store.dead_letters() == []


async def test_a_restart_re_forms_a_routes_groups_from_the_outbox(
        store: SQLiteStore, receiver: Receiver) -> None:
    events = [make_event(f"k{i}", severity="critical") for i in range(4)]
    await commit(store, events, "hook")
    routes = tree({"sinks": ["hook"], "routes": [
        {"name": "paging", "match": {"severity": "critical"}, "group_by": [],
         "group_wait": 3600}]})
    first = SinkWorker(hook(receiver), store, routes=routes)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    await wait_until(lambda: first.grouper is not None and first.grouper.pending == 4, 10,
                     "rows claimed into the route's group")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert receiver.received == [] and await depth(store) == 4
    # The next start groups the same rows by the same route (drain: nothing more can join).
    assert await asyncio.wait_for(SinkWorker(hook(receiver), store, routes=routes).drain(),
                                  20) == 0
    (digest,) = receiver.received
    assert digest.body["route"] == "paging"
    assert [e["id"] for e in digest.body["events"]] == [e.id for e in events]
    assert await asyncio.wait_for(SinkWorker(hook(receiver), store, routes=routes).drain(),
                                  20) == 0
    assert len(receiver.received) == 1 and await depth(store) == 0


async def test_routes_test_and_check_config_say_how_a_route_groups_at_each_sink(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump({
        "state": {"path": str(tmp_path / "bridge.db")}, "sources": [],
        "sinks": [{"name": "hook", "type": "webhook", "url": "https://hooks.example.test/in",
                   "group_interval": 600},
                  {"name": "archive", "type": "file", "path": str(tmp_path / "out.jsonl")}],
        "routes": {"sinks": ["hook", "archive"], "routes": [
            {"name": "paging", "match": {"severity": ">= high"},
             "group_by": ["severity", "tenant"], "group_wait": 10}]}}))
    code, out, err = await run_cli("routes", "test", "--config", str(config),
                                   "--event", '{"severity": "critical"}')
    assert code == 0, err
    # The file sink sends no digests: nothing is said of it here, and check-config warns.
    assert [line for line in out.splitlines() if line.startswith("grouping")] == [
        "grouping at hook: route paging, group_by [severity, tenant], group_wait 10s, "
        "group_interval 600s, max_batch 50"]
    code, out, err = await run_cli("check-config", str(config))
    assert code == 0, err
    assert [line for line in out.splitlines() if line.startswith("warning")] == [
        "warning: routes set grouping (group_by…) for sink archive (file), which sends no "
        "digests: each event goes as itself"]


def test_the_example_configs_commented_route_grouping_and_storm_guard_validate() -> None:
    """Commented text is not validated by loading the file: uncommented here, so the
    documentation cannot drift from what routes and sinks accept."""
    text = (Path(__file__).resolve().parents[2] / "config" / "bridge.example.yaml").read_text()
    block = text.split("    # - name: chat-per-tenant\n", 1)[1].split("\n\n", 1)[0]
    lines = ["- name: chat-per-tenant"] + [ln[6:] for ln in block.splitlines()
                                           if ln.startswith("    #   ")]
    (child,) = yaml.safe_load("\n".join(lines))
    routes = tree({"sinks": ["archive"], "routes": [child]})
    event = dataclasses.replace(make_event("a", tenant="contoso"), source="aether365")
    grouping = route(routes, event).groupings
    assert grouping["chat"] == RouteGrouping("chat-per-tenant", ("tenant", "severity"), 60, 600,
                                             20)
    siem = text.split("  - name: siem\n", 1)[1].split("\n\n", 1)[0]
    guard = {k: v for ln in siem.splitlines() if re.match(r"^    # (max_events|summary_)", ln)
             for k, v in yaml.safe_load(ln[6:].split("#")[0]).items()}
    assert guard == {"max_events_per_minute": 5000, "summary_interval": 60, "summary_top": 10}
    assert SyslogSinkConfig.model_validate({"name": "siem", "type": "syslog", "host": "siem",
                                            **guard}).grouping
