"""The route tree: which sinks an event goes to, in Alertmanager's semantics.

The root matches every event. A matching route tries its children in order; the first child
that matches wins unless it says `continue: true`, which lets later siblings match too. When no
child matches, the route itself is the result. A route without `sinks` inherits its parent's.
Routing is a pure function of (event, tree), so `bridge routes test` can explain every step.

A route may also set how its events are grouped into digests at the sinks it chooses
(`group_by`, `group_wait`, `group_interval`, `max_batch`; bridge/grouping.py). As in
Alertmanager, each is inherited by child routes unless they set their own, and overrides the
sink's setting; the route that chose a sink is part of the group, so two routes never share one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from bridge.baseline import Baseline
from bridge.components import StrictModel
from bridge.grouping import GroupingSettings, GroupRule, RouteGrouping, check_group_by
from bridge.model import SEVERITY_RANK, Event, JSONScalar

Op = Literal["eq", "ne", "in", "not_in", "regex", "not_regex", "gte", "gt", "lte", "lt"]
OPS: tuple[str, ...] = ("eq", "ne", "in", "not_in", "regex", "not_regex", "gte", "gt", "lte", "lt")
FIELDS = frozenset(
    {"type", "source", "vendor", "scope", "tenant", "kind", "key", "title", "severity",
     "vendor_severity", "status", "reason"}
)
_SHORTHAND = re.compile(r"^\s*(>=|>|<=|<|!=|=~|!~)\s*(.+?)\s*$")
_SHORT_OPS: dict[str, Op] = {">=": "gte", ">": "gt", "<=": "lte", "<": "lt", "!=": "ne",
                             "=~": "regex", "!~": "not_regex"}


class Matcher(StrictModel):
    """One condition on one field. YAML shorthands: a scalar (equality), a list (membership),
    `">= high"`, `"=~ regex"`, or a mapping `{op: value}`."""

    op: Op
    value: Any

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"op": "in", "value": data}
        if isinstance(data, dict):
            if set(data) == {"op", "value"}:
                return data
            if len(data) != 1:
                raise ValueError(f"a matcher mapping has exactly one operator, one of {', '.join(OPS)}")
            (op, value), = data.items()
            if op not in OPS:
                raise ValueError(f"unknown operator {op!r}; use one of {', '.join(OPS)}")
            return {"op": op, "value": value}
        if isinstance(data, str) and (m := _SHORTHAND.match(data)):
            return {"op": _SHORT_OPS[m.group(1)], "value": m.group(2)}
        return {"op": "eq", "value": data}

    @model_validator(mode="after")
    def _check(self) -> Matcher:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"{self.op} needs a list")
        if self.op in ("regex", "not_regex"):
            try:
                re.compile(str(self.value))
            except re.error as exc:
                raise ValueError(f"invalid regex {self.value!r}: {exc}") from None
        return self


class RouteConfig(StrictModel):
    name: str | None = None
    match: dict[str, Matcher] = Field(default_factory=dict)
    sinks: list[str] | None = None
    continue_: bool = Field(default=False, alias="continue")
    routes: list[RouteConfig] = Field(default_factory=list)
    # The first-sweep baseline for the sinks this route sends to (bridge/baseline.py), over
    # the source's and the sinks' own; inherited by child routes like `sinks`.
    baseline: Baseline | None = None
    # Digests of the events this route sends (Alertmanager's grouping, bridge/grouping.py):
    # over the sinks' own settings, each inherited by child routes; unset is "inherited".
    group_by: list[str] | None = None
    group_wait: float | None = Field(default=None, ge=0)
    group_interval: float | None = Field(default=None, gt=0)
    max_batch: int | None = Field(default=None, ge=1, le=1000)

    @field_validator("group_by")
    @classmethod
    def _group_fields(cls, value: list[str] | None) -> list[str] | None:
        return check_group_by(value)

    @property
    def grouping(self) -> dict[str, Any]:
        """The grouping settings this route sets itself."""
        return {name: getattr(self, name) for name in GROUPING_FIELDS
                if getattr(self, name) is not None}

    @field_validator("match")
    @classmethod
    def _fields(cls, match: dict[str, Matcher]) -> dict[str, Matcher]:
        # Errors carry the field as their location, so they read `….match.severity: …`.
        errors: list[InitErrorDetails] = []
        for name, matcher in match.items():
            try:
                check_matcher(name, matcher)
            except ValueError as exc:
                errors.append(InitErrorDetails(
                    type=PydanticCustomError("value_error", "{reason}", {"reason": str(exc)}),
                    loc=(name,), input=matcher.value))
        if errors:
            raise ValidationError.from_exception_data("match", errors)
        return match

    def sink_references(self, path: str) -> Iterator[tuple[str, str]]:
        for i, sink in enumerate(self.sinks or []):
            yield f"{path}.sinks[{i}]", sink
        for i, child in enumerate(self.routes):
            yield from child.sink_references(f"{path}.routes[{i}]")


GROUPING_FIELDS = ("group_by", "group_wait", "group_interval", "max_batch")


def grouped_sinks(tree: RouteConfig) -> set[str]:
    """The sinks some route (or a route above it) sets grouping for: their workers group."""
    found: set[str] = set()

    def visit(node: RouteConfig, inherited: list[str], grouped: bool) -> None:
        sinks = node.sinks if node.sinks is not None else inherited
        grouped = grouped or bool(node.grouping)
        if grouped:
            found.update(sinks)
        for child in node.routes:
            visit(child, sinks, grouped)

    visit(tree, [], False)
    return found


class RememberedRoutes:
    """`route(tree, event)`, remembered. Routing reads nothing of an event but the fields the
    tree's matchers name, and the events of a sweep or a claimed batch share a handful of
    combinations of those, so the tree is walked once per combination, not once per event
    (a bounded cache: matchers on titles or resources make every event its own)."""

    size = 10_000

    def __init__(self, tree: RouteConfig) -> None:
        self.tree = tree
        self.fields = tuple(sorted(_matched_fields(tree)))
        self._known: dict[tuple[JSONScalar, ...], Decision] = {}

    def __call__(self, event: Event) -> Decision:
        values = tuple([event.field_value(f) for f in self.fields])
        decision = self._known.get(values)
        if decision is None:
            decision = route(self.tree, event)
            if len(self._known) >= self.size:
                self._known.clear()
            self._known[values] = decision
        return decision


def grouping_rules(tree: RouteConfig, sink: str, settings: GroupingSettings
                   ) -> Callable[[Event], GroupRule] | None:
    """How the worker of `sink` groups each event: by the route that sent it there, over the
    sink's `settings`. None when no route sets grouping for this sink (the sink's own apply)."""
    if sink not in grouped_sinks(tree):
        return None
    own = settings.rule()
    decide = RememberedRoutes(tree)
    # One rule per route grouping: those objects are the tree's and live as long as it does.
    rules: dict[int, GroupRule] = {}

    def rule_of(event: Event) -> GroupRule:
        grouping = decide(event).groupings.get(sink)
        if grouping is None:
            return own
        rule = rules.get(id(grouping))
        if rule is None:
            rule = rules[id(grouping)] = settings.rule(grouping)
        return rule

    return rule_of


def _matched_fields(node: RouteConfig) -> set[str]:
    return set(node.match).union(*(_matched_fields(child) for child in node.routes))


def check_matcher(name: str, matcher: Matcher) -> None:
    """ValueError unless `name` is a field events have and `matcher` makes sense for it (a
    severity compared with a severity): what routes and silences accept."""
    if name not in FIELDS and not name.startswith("attributes."):
        raise ValueError(
            f"unknown field {name!r}; use one of {', '.join(sorted(FIELDS))} "
            "or attributes.<name>"
        )
    if matcher.op in ("gte", "gt", "lte", "lt") and name == "severity":
        values = [matcher.value]
    elif name == "severity":
        values = matcher.value if isinstance(matcher.value, list) else []
        if matcher.op in ("eq", "ne"):
            values = [matcher.value]
    else:
        values = []
    for v in values:
        if str(v) not in SEVERITY_RANK:
            raise ValueError(
                f"severity {v!r} is not one of {', '.join(SEVERITY_RANK)}"
            )


def _ordered(value: JSONScalar, field: str) -> float | None:
    if field == "severity" or (isinstance(value, str) and value in SEVERITY_RANK):
        return float(SEVERITY_RANK[str(value)]) if str(value) in SEVERITY_RANK else None
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def match_value(matcher: Matcher, field: str, actual: JSONScalar) -> bool:
    """Whether `actual`, the value of `field`, satisfies `matcher` (what routes and silences
    test for each of their matchers)."""
    op, want = matcher.op, matcher.value
    if op == "eq":
        return actual == want or (actual is not None and str(actual) == str(want))
    if op == "ne":
        return not (actual == want or (actual is not None and str(actual) == str(want)))
    if op in ("in", "not_in"):
        hit = actual in want or (actual is not None and str(actual) in {str(w) for w in want})
        return hit if op == "in" else not hit
    if op in ("regex", "not_regex"):
        hit = actual is not None and re.fullmatch(str(want), str(actual)) is not None
        return hit if op == "regex" else not hit
    a, w = _ordered(actual, field), _ordered(want, field)
    if a is None or w is None:
        return False
    return {"gte": a >= w, "gt": a > w, "lte": a <= w, "lt": a < w}[op]


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a routing explanation."""

    path: str
    matched: bool
    why: str


@dataclass(frozen=True, slots=True)
class Decision:
    sinks: tuple[str, ...]
    routes: tuple[str, ...]
    steps: tuple[Step, ...]
    # Sink -> the baseline mode the route that chose it sets (only where one does).
    baselines: Mapping[str, Baseline] = field(default_factory=dict)
    # Sink -> the grouping the route that chose it sets (only where one does).
    groupings: Mapping[str, RouteGrouping] = field(default_factory=dict)


def _label(route: RouteConfig, path: str) -> str:
    return f"{path} ({route.name})" if route.name else path


def _describe(field: str, matcher: Matcher) -> str:
    return f"{field} {matcher.op} {matcher.value!r}"


# A matching leaf of the tree: (its label, its sinks, its baseline mode, the grouping it sets
# or inherits).
Result = tuple[str, list[str], Baseline | None, RouteGrouping | None]


def route(tree: RouteConfig, event: Event, *, explain: bool = False) -> Decision:
    """Which sinks get `event`; with `explain`, also why each route matched or not."""
    steps: list[Step] = []

    def visit(node: RouteConfig, path: str, inherited: list[str],
              inherited_baseline: Baseline | None,
              inherited_grouping: Mapping[str, Any]) -> list[Result]:
        if explain:
            failed = [
                f"{_describe(f, m)} but {f} is {event.field_value(f)!r}"
                for f, m in node.match.items()
                if not match_value(m, f, event.field_value(f))
            ]
            label = _label(node, path)
            if failed:
                steps.append(Step(label, False, "; ".join(failed)))
                return []
            why = ", ".join(_describe(f, m) for f, m in node.match.items()) or "matches everything"
            steps.append(Step(label, True, why))
        else:
            for f, m in node.match.items():
                if not match_value(m, f, event.field_value(f)):
                    return []
            label = _label(node, path)
        sinks = node.sinks if node.sinks is not None else inherited
        baseline = node.baseline if node.baseline is not None else inherited_baseline
        own = node.grouping
        grouping = {**inherited_grouping, **own} if own else inherited_grouping
        found: list[Result] = []
        for i, child in enumerate(node.routes):
            hits = visit(child, f"{path}.routes[{i}]", sinks, baseline, grouping)
            found += hits
            if hits and not child.continue_:
                break
        # A group is known by its route's name, or its place in the tree when unnamed.
        return found or [(label, sinks, baseline,
                          _route_grouping(node.name or path, grouping) if grouping else None)]

    results = visit(tree, "routes", [], None, {})
    sinks: list[str] = []
    baselines: dict[str, Baseline] = {}
    groupings: dict[str, RouteGrouping] = {}
    for _, names, mode, grouping in results:
        for n in names:
            if n not in sinks:
                sinks.append(n)
                if mode is not None:
                    baselines[n] = mode
                if grouping is not None:
                    groupings[n] = grouping
    return Decision(tuple(sinks), tuple(r[0] for r in results), tuple(steps), baselines,
                    groupings)


def _route_grouping(route: str, settings: Mapping[str, Any]) -> RouteGrouping:
    by = settings.get("group_by")
    return RouteGrouping(route, None if by is None else tuple(by), settings.get("group_wait"),
                         settings.get("group_interval"), settings.get("max_batch"))
