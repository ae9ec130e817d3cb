"""The route tree: matchers, `continue`, nesting and inheritance, explanations, and invalid
matcher configs rejected with the YAML path of the offending matcher."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import ConfigError, parse_config
from bridge.model import Event, EventType
from bridge.routing import Matcher, RouteConfig, route

from ._helpers import make_event

SINKS = ["siem", "pager", "jira", "audit", "catchall"]


def tree(spec: dict[str, Any]) -> RouteConfig:
    return RouteConfig.model_validate(spec)


def event(**kw: Any) -> Event:
    kw.setdefault("title", "Open S3 bucket")
    kw.setdefault("severity", "medium")
    return make_event(**kw)


def sinks_for(spec: dict[str, Any], ev: Event) -> tuple[str, ...]:
    return route(tree(spec), ev).sinks


def one(match: dict[str, Any], ev: Event) -> bool:
    """Does a single route with this `match` take the event?"""
    return sinks_for({"sinks": ["catchall"], "routes": [{"match": match, "sinks": ["hit"]}]},
                     ev) == ("hit",)


# -- matchers ----------------------------------------------------------------------------------


def test_equality() -> None:
    assert one({"source": "so"}, event())
    assert not one({"source": "other"}, event())
    assert one({"type": "resolved"}, event(type_=EventType.RESOLVED))
    assert not one({"type": "resolved"}, event(type_=EventType.NEW))
    assert one({"kind": "finding", "scope": "so-main"}, event())  # all conditions must hold
    assert not one({"kind": "finding", "scope": "elsewhere"}, event())


def test_list_membership() -> None:
    assert one({"severity": ["high", "critical"]}, event(severity="critical"))
    assert not one({"severity": ["high", "critical"]}, event(severity="medium"))
    assert one({"type": ["new", "reopened"]}, event(type_=EventType.REOPENED))


def test_not_in() -> None:
    assert one({"type": {"not_in": ["resolved", "changed"]}}, event(type_=EventType.NEW))
    assert not one({"type": {"not_in": ["resolved", "changed"]}},
                   event(type_=EventType.RESOLVED))


def test_regex_is_a_full_match() -> None:
    assert one({"title": "=~ Open .* bucket"}, event())
    assert one({"title": {"regex": "(?i)open s3.*"}}, event())
    assert not one({"title": "=~ S3"}, event())  # a substring is not enough
    assert not one({"title": "=~ Open"}, event())
    assert one({"title": "!~ .*EC2.*"}, event())
    assert not one({"title": "!~ .*S3.*"}, event())


def test_severity_threshold_shorthand_and_mapping() -> None:
    for match in ({"severity": ">= high"}, {"severity": {"gte": "high"}}):
        assert [one(match, event(severity=s)) for s in ("info", "low", "medium", "high",
                                                        "critical")] == [False, False, False,
                                                                         True, True]
    assert [one({"severity": "> medium"}, event(severity=s)) for s in ("medium", "high")] == [
        False, True]
    assert [one({"severity": "< medium"}, event(severity=s)) for s in ("low", "medium")] == [
        True, False]
    assert [one({"severity": {"lte": "low"}}, event(severity=s)) for s in ("low", "medium")] == [
        True, False]


def test_not_equal() -> None:
    assert one({"source": "!= other"}, event())
    assert not one({"source": "!= so"}, event())
    assert one({"type": {"ne": "resolved"}}, event(type_=EventType.CHANGED))


def test_attributes() -> None:
    ev = event(attributes={"region": "eu-west-1", "account": "1234", "risk": 7})
    assert one({"attributes.region": "eu-west-1"}, ev)
    assert not one({"attributes.region": "us-east-1"}, ev)
    assert one({"attributes.region": "=~ eu-.*"}, ev)
    assert one({"attributes.account": 1234}, ev)  # YAML may read a number; compared as text
    assert one({"attributes.risk": {"gte": 5}}, ev)
    assert not one({"attributes.risk": {"gt": 7}}, ev)
    # A missing attribute equals nothing, so `!=` and `!~` hold and ordering never does.
    assert not one({"attributes.owner": "alice"}, ev)
    assert one({"attributes.owner": "!= alice"}, ev)
    assert not one({"attributes.owner": "=~ .*"}, ev)
    assert not one({"attributes.owner": {"gte": 0}}, ev)


def test_ordering_on_non_numbers_never_matches() -> None:
    ev = event(attributes={"region": "eu"})
    assert not one({"attributes.region": {"gt": 1}}, ev)
    assert not one({"attributes.region": {"lt": 1}}, ev)


def test_matcher_shorthands_parse_to_operators() -> None:
    cases = {
        "high": ("eq", "high"), ">= high": ("gte", "high"), ">high": ("gt", "high"),
        "<= low": ("lte", "low"), "< low": ("lt", "low"), "!= x": ("ne", "x"),
        "=~ a.*": ("regex", "a.*"), "!~ b": ("not_regex", "b"),
    }
    for raw, (op, value) in cases.items():
        m = Matcher.model_validate(raw)
        assert (m.op, m.value) == (op, value), raw
    assert Matcher.model_validate(["a", "b"]).op == "in"
    assert Matcher.model_validate({"not_in": ["a"]}).op == "not_in"
    assert Matcher.model_validate(3).op == "eq"


# -- the tree ----------------------------------------------------------------------------------


def test_root_is_the_default() -> None:
    spec = {"sinks": ["catchall"], "routes": [{"match": {"source": "nope"}, "sinks": ["siem"]}]}
    d = route(tree(spec), event(), explain=True)
    assert d.sinks == ("catchall",)
    assert d.routes == ("routes",)


def test_empty_tree_routes_nowhere() -> None:
    d = route(RouteConfig(), event(), explain=True)
    assert d.sinks == () and d.routes == ("routes",)


def test_first_match_wins() -> None:
    spec = {"sinks": ["catchall"], "routes": [
        {"match": {"severity": ">= high"}, "sinks": ["pager"]},
        {"match": {"source": "so"}, "sinks": ["siem"]},
    ]}
    assert sinks_for(spec, event(severity="critical")) == ("pager",)
    assert sinks_for(spec, event(severity="low")) == ("siem",)
    d = route(tree(spec), event(severity="critical"), explain=True)
    assert d.routes == ("routes.routes[0]",)
    # The second route was never even tried.
    assert [s.path for s in d.steps] == ["routes", "routes.routes[0]"]


def test_continue_lets_later_siblings_match_too() -> None:
    spec = {"sinks": ["catchall"], "routes": [
        {"match": {"kind": "finding"}, "sinks": ["audit"], "continue": True},
        {"match": {"severity": ">= high"}, "sinks": ["pager"]},
        {"match": {"source": "so"}, "sinks": ["siem"]},
    ]}
    assert sinks_for(spec, event(severity="critical")) == ("audit", "pager")
    assert sinks_for(spec, event(severity="low")) == ("audit", "siem")
    d = route(tree(spec), event(severity="low"), explain=True)
    assert d.routes == ("routes.routes[0]", "routes.routes[2]")


def test_continue_on_a_route_that_does_not_match_changes_nothing() -> None:
    spec = {"sinks": ["catchall"], "routes": [
        {"match": {"kind": "score"}, "sinks": ["audit"], "continue": True},
        {"match": {"source": "so"}, "sinks": ["siem"]},
        {"match": {"source": "so"}, "sinks": ["jira"]},
    ]}
    assert sinks_for(spec, event()) == ("siem",)


def test_sinks_are_not_repeated_when_several_routes_name_them() -> None:
    spec = {"routes": [
        {"match": {"kind": "finding"}, "sinks": ["siem", "audit"], "continue": True},
        {"match": {"source": "so"}, "sinks": ["audit", "pager"]},
    ]}
    assert sinks_for(spec, event()) == ("siem", "audit", "pager")


def test_nested_routes_inherit_sinks() -> None:
    spec = {"sinks": ["siem"], "routes": [
        {"name": "findings", "match": {"kind": "finding"}, "routes": [
            {"name": "urgent", "match": {"severity": "critical"}, "sinks": ["pager"]},
            {"name": "eu", "match": {"attributes.region": "=~ eu-.*"}},
        ]},
    ]}
    d = route(tree(spec), event(severity="critical"), explain=True)
    assert d.sinks == ("pager",)
    assert d.routes == ("routes.routes[0].routes[0] (urgent)",)
    # No sinks of its own: inherits from "findings", which inherits the root's.
    d = route(tree(spec), event(severity="low", attributes={"region": "eu-west-1"}), explain=True)
    assert d.sinks == ("siem",)
    assert d.routes == ("routes.routes[0].routes[1] (eu)",)
    # A matching parent whose children all fail is itself the result.
    d = route(tree(spec), event(severity="low"), explain=True)
    assert d.sinks == ("siem",)
    assert d.routes == ("routes.routes[0] (findings)",)


def test_inheritance_is_from_the_nearest_ancestor_with_sinks() -> None:
    spec = {"sinks": ["catchall"], "routes": [
        {"match": {"kind": "finding"}, "sinks": ["jira"], "routes": [
            {"match": {"source": "so"}, "routes": [{"match": {"severity": "medium"}}]},
        ]},
    ]}
    d = route(tree(spec), event(), explain=True)
    assert d.sinks == ("jira",)
    assert d.routes == ("routes.routes[0].routes[0].routes[0]",)


def test_explicit_empty_sinks_drop_the_event() -> None:
    spec = {"sinks": ["siem"], "routes": [{"match": {"type": "changed"}, "sinks": []}]}
    assert sinks_for(spec, event(type_=EventType.CHANGED)) == ()
    assert sinks_for(spec, event(type_=EventType.NEW)) == ("siem",)


def test_non_matching_child_subtree_is_not_visited() -> None:
    spec = {"routes": [
        {"match": {"kind": "score"}, "routes": [{"sinks": ["siem"]}]},
    ]}
    d = route(tree(spec), event(), explain=True)
    assert d.sinks == ()
    assert [s.path for s in d.steps] == ["routes", "routes.routes[0]"]


# -- explanations ------------------------------------------------------------------------------


def test_steps_explain_every_decision() -> None:
    spec = {"sinks": ["catchall"], "routes": [
        {"name": "critical", "match": {"severity": ">= critical", "source": "so"},
         "sinks": ["pager"]},
        {"name": "resolved", "match": {"type": "resolved"}, "sinks": ["jira"]},
        {"name": "eu", "match": {"attributes.region": "eu"}, "sinks": ["siem"]},
        {"name": "never", "sinks": ["audit"]},
    ]}
    d = route(tree(spec), event(severity="high", attributes={"region": "eu"}), explain=True)
    steps = {s.path: s for s in d.steps}
    assert list(steps) == ["routes", "routes.routes[0] (critical)",
                           "routes.routes[1] (resolved)", "routes.routes[2] (eu)"]
    assert steps["routes"].matched and steps["routes"].why == "matches everything"
    crit = steps["routes.routes[0] (critical)"]
    assert not crit.matched
    # Names the failed condition and the actual value; not the condition that held.
    assert crit.why == "severity gte 'critical' but severity is 'high'"
    res = steps["routes.routes[1] (resolved)"]
    assert not res.matched and res.why == "type eq 'resolved' but type is 'new'"
    eu = steps["routes.routes[2] (eu)"]
    assert eu.matched and eu.why == "attributes.region eq 'eu'"
    assert d.sinks == ("siem",)


def test_steps_list_every_failed_condition() -> None:
    spec = {"routes": [{"match": {"source": "x", "kind": "score", "scope": "so-main"},
                        "sinks": ["siem"]}]}
    why = route(tree(spec), event(), explain=True).steps[1].why
    assert "source eq 'x' but source is 'so'" in why
    assert "kind eq 'score' but kind is 'finding'" in why
    assert "scope" not in why


def test_missing_attribute_is_explained_as_none() -> None:
    spec = {"routes": [{"match": {"attributes.team": "sec"}, "sinks": ["siem"]}]}
    step = route(tree(spec), event(), explain=True).steps[1]
    assert step.why == "attributes.team eq 'sec' but attributes.team is None"


# -- invalid matchers, reported with their YAML path -------------------------------------------


def config_with(routes: dict[str, Any]) -> dict[str, Any]:
    return {"sinks": [{"type": "stdout", "name": n} for n in SINKS], "routes": routes}


def problems(routes: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(config_with(routes))
    return err.value.problems


@pytest.mark.parametrize(
    ("match", "path", "words"),
    [
        ({"title": "=~ ([unclosed"}, "routes.routes[0].match.title", "invalid regex"),
        ({"title": {"not_regex": "*x"}}, "routes.routes[0].match.title", "invalid regex"),
        ({"colour": "red"}, "routes.routes[0].match.colour", "unknown field 'colour'"),
        ({"severity": "urgent"}, "routes.routes[0].match.severity", "severity 'urgent'"),
        ({"severity": ">= hihg"}, "routes.routes[0].match.severity", "severity 'hihg'"),
        ({"severity": {"gte": "extreme"}}, "routes.routes[0].match.severity", "extreme"),
        ({"severity": ["high", "critcal"]}, "routes.routes[0].match.severity", "critcal"),
        ({"title": {"like": "x"}}, "routes.routes[0].match.title", "unknown operator 'like'"),
        ({"title": {"in": "x"}}, "routes.routes[0].match.title", "in needs a list"),
        ({"title": {"eq": "a", "ne": "b"}}, "routes.routes[0].match.title", "exactly one"),
    ],
)
def test_invalid_matchers_name_their_path(match: dict[str, Any], path: str, words: str) -> None:
    found = problems({"sinks": ["catchall"], "routes": [{"match": match, "sinks": ["siem"]}]})
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}: "), found
    assert words in found[0]


def test_unknown_field_message_lists_the_known_ones() -> None:
    (msg,) = problems({"routes": [{"match": {"sev": "high"}}]})
    assert "severity" in msg and "attributes.<name>" in msg


def test_invalid_matcher_deep_in_the_tree() -> None:
    (msg,) = problems({"routes": [
        {"match": {"kind": "finding"}},
        {"routes": [{"match": {"severity": "nope"}}]},
    ]})
    assert msg.startswith("routes.routes[1].routes[0].match.severity: ")


def test_every_bad_matcher_is_reported_at_once() -> None:
    found = problems({"routes": [{"match": {"severity": "nope", "colour": "red"}},
                                 {"match": {"title": "=~ ("}}]})
    assert sorted(p.split(":")[0] for p in found) == [
        "routes.routes[0].match.colour", "routes.routes[0].match.severity",
        "routes.routes[1].match.title"]


def test_unknown_route_key_is_rejected() -> None:
    (msg,) = problems({"routes": [{"matches": {"kind": "finding"}}]})
    assert msg.startswith("routes.routes[0].matches: ")


def test_valid_tree_through_parse_config_routes_as_written() -> None:
    config = parse_config(config_with({"sinks": ["catchall"], "routes": [
        {"match": {"severity": ">= high", "type": ["new", "reopened"]}, "sinks": ["pager"],
         "continue": True},
        {"match": {"attributes.region": "=~ eu-.*"}, "sinks": ["siem"]},
    ]}))
    ev = event(severity="critical", attributes={"region": "eu-central-1"})
    assert route(config.routes, ev).sinks == ("pager", "siem")


def test_decision_without_explanation_is_the_same() -> None:
    spec = {"sinks": ["catchall"], "routes": [
        {"match": {"kind": "finding"}, "sinks": ["audit"], "continue": True},
        {"match": {"severity": ">= high"}, "routes": [{"match": {"tenant": "acme"},
                                                        "sinks": ["pager"]}]},
    ]}
    for ev in (event(), event(severity="critical"), event(severity="high", tenant="acme")):
        plain = route(tree(spec), ev)
        explained = route(tree(spec), ev, explain=True)
        assert (plain.sinks, plain.routes) == (explained.sinks, explained.routes)
        assert plain.steps == () and explained.steps
