"""The diff rules (bridge/diff.py docstring), one test per rule, plus a stateful hypothesis model
that checks the event grammar of every item over arbitrary vendor histories."""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bridge.diff import ChangeVerdict, Differ, DiffPolicy, StoredItems, diff
from bridge.model import EventType, Item, Sweep, event_id

from ._helpers import SCOPE, T0, DictStore, item, sweep

NEW, CHANGED, RESOLVED, REOPENED = (EventType.NEW, EventType.CHANGED, EventType.RESOLVED,
                                    EventType.REOPENED)


def types(result) -> list[tuple[str, EventType]]:  # type: ignore[no-untyped-def]
    return [(e.key, e.type) for e in result.events]


# -- new ---------------------------------------------------------------------------------------


def test_first_active_sighting_is_new_with_counter_1() -> None:
    store = DictStore()
    r = store.run(sweep(item("a", severity="critical", title="Open S3 bucket",
                             attributes={"region": "eu-west-1"})))
    assert types(r) == [("a", NEW)]
    ev = r.events[0]
    assert ev.counter == 1
    assert ev.severity == "critical" and ev.title == "Open S3 bucket"
    assert ev.attributes == {"region": "eu-west-1"}
    assert ev.scope == SCOPE and ev.source == "so" and ev.vendor == "scanorbit"
    assert ev.id == event_id(SCOPE, "finding", "a", NEW, 1)
    assert r.seen == 1
    assert store.items[("finding", "a")].state == "active"
    assert store.items[("finding", "a")].first_seen == store.now


def test_seen_again_unchanged_emits_nothing_and_writes_nothing() -> None:
    store = DictStore()
    store.run(sweep(item("a")))
    r = store.run(sweep(item("a")))
    assert r.events == [] and r.writes == []
    assert r.seen == 1


def test_new_in_incomplete_sweep_is_still_created() -> None:
    store = DictStore()
    r = store.run(sweep(item("a"), complete=False))
    assert types(r) == [("a", NEW)]
    assert store.state("a") == "active"


def test_inactive_item_never_seen_before_is_not_created() -> None:
    store = DictStore()
    r = store.run(sweep(item("a", active=False, status="resolved")))
    assert r.events == [] and r.writes == []
    assert store.items == {}
    # ... and when it later becomes active, that is its `new`, counter 1.
    r = store.run(sweep(item("a")))
    assert types(r) == [("a", NEW)] and r.events[0].counter == 1


# -- changed -----------------------------------------------------------------------------------


def test_changed_reports_old_and_new_values_of_changed_fields_only() -> None:
    store = DictStore()
    store.run(sweep(item("a", severity="medium", title="t1", status="open")))
    r = store.run(sweep(item("a", severity="critical", title="t1", status="in_progress")))
    assert types(r) == [("a", CHANGED)]
    ev = r.events[0]
    assert dict(ev.changes) == {"severity": ("medium", "critical"),
                                "status": ("open", "in_progress")}
    assert ev.counter == 2
    assert ev.severity == "critical"
    assert "severity" in ev.reason and "status" in ev.reason
    assert ev.id == event_id(SCOPE, "finding", "a", CHANGED, 2)


def test_untracked_field_change_is_not_an_event() -> None:
    store = DictStore()
    store.run(sweep(item("a", attributes={"region": "eu"}, raw={"x": 1})))
    r = store.run(sweep(item("a", attributes={"region": "us"}, raw={"x": 2})))
    assert r.events == []


def test_tracked_attribute_field() -> None:
    store = DictStore(DiffPolicy(tracked_fields=("severity", "attributes.region")))
    store.run(sweep(item("a", attributes={"region": "eu"})))
    r = store.run(sweep(item("a", attributes={"region": "us"}, title="renamed")))
    assert types(r) == [("a", CHANGED)]
    assert dict(r.events[0].changes) == {"attributes.region": ("eu", "us")}


def test_successive_changes_count_up() -> None:
    store = DictStore()
    store.run(sweep(item("a", severity="low")))
    counters = [store.run(sweep(item("a", severity=s))).events[0].counter
                for s in ("medium", "high", "critical")]
    assert counters == [2, 3, 4]


def test_changed_in_incomplete_sweep_is_still_reported() -> None:
    store = DictStore()
    store.run(sweep(item("a", severity="low")))
    r = store.run(sweep(item("a", severity="high"), complete=False))
    assert types(r) == [("a", CHANGED)]


def test_reconfigured_tracked_fields_rebaseline_silently_then_report_changes() -> None:
    # No old values to compare with is no change: never a `changed` for every stored item.
    store = DictStore(DiffPolicy(tracked_fields=("severity",)))
    store.run(sweep(item("a", severity="low"), item("b", severity="high")))
    store.policy = DiffPolicy(tracked_fields=("severity", "title"))
    r = store.run(sweep(item("a", severity="low", title="t"), item("b", severity="high")))
    assert r.events == [] and r.rebaselined == 2
    assert json.loads(store.items[("finding", "a")].tracked) == [["severity", "title"], "low", "t"]
    assert store.items[("finding", "a")].counter == 1
    again = store.run(sweep(item("a", severity="low", title="t"), item("b", severity="high")))
    assert again.events == [] and again.writes == [] and again.rebaselined == 0
    r = store.run(sweep(item("a", severity="low", title="t2"), item("b", severity="high")))
    assert types(r) == [("a", CHANGED)] and r.events[0].counter == 2
    assert dict(r.events[0].changes) == {"title": ("t", "t2")}


def test_tracked_fields_swapped_for_as_many_others_rebaseline_silently() -> None:
    # The same number of fields is no proof of the same fields: "high" stored for severity is
    # not a title that changed to "t" (a `changed` for every stored item, a ticket storm).
    store = DictStore(DiffPolicy(tracked_fields=("status", "severity")))
    store.run(sweep(item("a", severity="high", title="t"), item("b", severity="low")))
    store.policy = DiffPolicy(tracked_fields=("status", "title"))
    r = store.run(sweep(item("a", severity="high", title="t"), item("b", severity="low")))
    assert r.events == [] and r.rebaselined == 2
    r = store.run(sweep(item("a", severity="high", title="t2"), item("b", severity="low")))
    assert types(r) == [("a", CHANGED)] and dict(r.events[0].changes) == {"title": ("t", "t2")}


def test_tracked_fields_reordered_are_compared_by_name() -> None:
    store = DictStore(DiffPolicy(tracked_fields=("status", "severity")))
    store.run(sweep(item("a", severity="high")))
    store.policy = DiffPolicy(tracked_fields=("severity", "status"))
    r = store.run(sweep(item("a", severity="critical")))
    assert types(r) == [("a", CHANGED)]
    assert dict(r.events[0].changes) == {"severity": ("high", "critical")}
    assert store.run(sweep(item("a", severity="critical"))).writes == []


def test_a_tracked_list_stored_without_field_names_is_read_as_before_and_named_once() -> None:
    # Lists written before the field names were stored with them hold values only: they are
    # taken as tracked for today's fields when as many, which is what they were then.
    store = DictStore()
    store.run(sweep(item("a", severity="high"), item("b", severity="low")))
    for key, row in list(store.rows.items()):
        store.rows[key] = dataclasses.replace(row, tracked=json.dumps(json.loads(row.tracked)[1:]))
    r = store.run(sweep(item("a", severity="critical"), item("b", severity="low")))
    assert types(r) == [("a", CHANGED)] and r.rebaselined == 0
    assert dict(r.events[0].changes) == {"severity": ("high", "critical")}
    assert [w.key for w in r.writes] == ["a", "b"]  # b: its list named, silently
    assert json.loads(store.items[("finding", "b")].tracked)[0] == list(DiffPolicy().tracked_fields)
    assert store.run(sweep(item("a", severity="critical"), item("b", severity="low"))).writes == []


def test_upgrade_to_tracking_vendor_severity_is_silent_then_a_vendor_change_is_an_event() -> None:
    store = DictStore(DiffPolicy(tracked_fields=("title", "severity", "status")))
    store.run(sweep(item("a", severity="info", vendor_severity="info"),
                    item("b", severity="high", vendor_severity="high")))
    store.policy = DiffPolicy()  # the default now tracks vendor_severity too
    assert "vendor_severity" in store.policy.tracked_fields
    upgraded = store.run(sweep(item("a", severity="info", vendor_severity="info"),
                               item("b", severity="high", vendor_severity="high")))
    assert upgraded.events == [] and upgraded.rebaselined == 2
    r = store.run(sweep(item("a", severity="info", vendor_severity="trivial"),
                        item("b", severity="high", vendor_severity="high")))
    assert types(r) == [("a", CHANGED)]
    ev = r.events[0]
    assert dict(ev.changes) == {"vendor_severity": ("info", "trivial")}
    assert ev.severity == "info" and ev.vendor_severity == "trivial" and ev.counter == 2
    assert ev.reason == "changed: vendor_severity"


def test_reconfigured_kind_with_a_change_rule_is_rebaselined_not_judged() -> None:
    # The rule never sees values it cannot pair with field names.
    seen: list[object] = []

    def rule(old: object, new: object) -> ChangeVerdict:
        seen.append((old, new))
        return "event"

    store = DictStore(DiffPolicy(kind_tracked_fields={"score": ("attributes.score",)},
                                 change_rules={"score": rule}))
    store.run(sweep(item("s", kind="score", attributes={"score": 70}), kinds={"score": True}))
    store.policy = DiffPolicy(
        kind_tracked_fields={"score": ("attributes.score", "attributes.grade")},
        change_rules={"score": rule})
    r = store.run(sweep(item("s", kind="score", attributes={"score": 60, "grade": "C"}),
                        kinds={"score": True}))
    assert r.events == [] and r.rebaselined == 1 and seen == []


# -- resolved by the vendor --------------------------------------------------------------------


def test_vendor_resolution_in_complete_sweep_resolves_with_its_reason() -> None:
    store = DictStore()
    store.run(sweep(item("a")))
    r = store.run(sweep(item("a", active=False, status="resolved",
                             resolution="vendor status resolved")))
    assert types(r) == [("a", RESOLVED)]
    ev = r.events[0]
    assert ev.counter == 2 and ev.reason == "vendor status resolved"
    assert ev.status == "resolved"
    assert store.state("a") == "resolved"
    # The vendor keeps reporting it resolved: nothing more happens.
    r = store.run(sweep(item("a", active=False, status="resolved")))
    assert r.events == [] and r.writes == []


def test_vendor_resolution_without_reason_says_resolved_by_vendor() -> None:
    store = DictStore()
    store.run(sweep(item("a")))
    r = store.run(sweep(item("a", active=False)))
    assert r.events[0].reason == "resolved by vendor"


def test_vendor_resolution_in_incomplete_sweep_is_ignored_and_not_a_miss() -> None:
    store = DictStore()
    store.run(sweep(item("a")))
    for _ in range(5):
        r = store.run(sweep(item("a", active=False), complete=False))
        assert r.events == [] and r.writes == []
    assert store.state("a") == "active"
    assert store.items[("finding", "a")].misses == 0
    # The same report in a complete sweep does resolve.
    r = store.run(sweep(item("a", active=False)))
    assert types(r) == [("a", RESOLVED)]


def test_vendor_resolution_only_counts_for_the_complete_kind() -> None:
    store = DictStore()
    store.run(sweep(item("f"), item("s", kind="score"),
                    kinds={"finding": True, "score": True}))
    r = store.run(sweep(item("f", active=False), item("s", kind="score", active=False),
                        kinds={"finding": True, "score": False}))
    assert types(r) == [("f", RESOLVED)]
    assert store.state("s", "score") == "active"


# -- resolved after misses ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_absent_resolves_after_exactly_n_complete_sweeps(n: int) -> None:
    store = DictStore(DiffPolicy(resolve_after_misses=n))
    store.run(sweep(item("a", severity="critical", title="snap"), item("b")))
    for miss in range(1, n):
        r = store.run(sweep(item("b")))
        assert r.events == [], f"resolved after only {miss} misses"
        assert store.items[("finding", "a")].misses == miss
        assert store.state("a") == "active"
    r = store.run(sweep(item("b")))
    assert types(r) == [("a", RESOLVED)]
    ev = r.events[0]
    assert ev.counter == 2
    assert ev.reason == f"absent from {n} consecutive complete sweeps"
    # Built from the stored snapshot: the last known title and severity.
    assert ev.title == "snap" and ev.severity == "critical"
    assert store.state("a") == "resolved"


def test_default_policy_resolves_after_two_misses() -> None:
    store = DictStore()
    store.run(sweep(item("a")))
    assert store.run(sweep()).events == []
    assert types(store.run(sweep())) == [("a", RESOLVED)]


def test_resolution_by_misses_keeps_stored_snapshot_and_tracked() -> None:
    store = DictStore()
    store.run(sweep(item("a", title="kept")))
    before = store.items[("finding", "a")]
    store.run(sweep())
    store.run(sweep())
    after = store.items[("finding", "a")]
    assert after.state == "resolved"
    assert (after.tracked, after.snapshot) == (before.tracked, before.snapshot)
    assert json.loads(after.snapshot)["title"] == "kept"


def test_seen_again_resets_misses() -> None:
    store = DictStore(DiffPolicy(resolve_after_misses=3))
    store.run(sweep(item("a")))
    store.run(sweep())
    store.run(sweep())
    assert store.items[("finding", "a")].misses == 2
    r = store.run(sweep(item("a")))
    assert r.events == []
    assert [(w.key, w.misses, w.snapshot) for w in r.writes] == [("a", 0, None)]
    assert store.items[("finding", "a")].misses == 0
    # Two more misses are again not enough.
    store.run(sweep())
    assert store.run(sweep()).events == []
    assert types(store.run(sweep())) == [("a", RESOLVED)]


def test_incomplete_sweeps_are_not_misses_and_never_resolve() -> None:
    store = DictStore()
    store.run(sweep(item("a")))
    for _ in range(10):
        r = store.run(sweep(complete=False))
        assert r.events == [] and r.writes == []
    assert store.state("a") == "active"
    assert store.items[("finding", "a")].misses == 0


def test_incomplete_sweep_between_misses_neither_counts_nor_resets() -> None:
    store = DictStore()
    store.run(sweep(item("a")))
    store.run(sweep())  # miss 1
    store.run(sweep(complete=False))
    assert store.items[("finding", "a")].misses == 1
    assert types(store.run(sweep())) == [("a", RESOLVED)]  # miss 2


def test_seen_in_incomplete_sweep_still_resets_misses() -> None:
    store = DictStore()
    store.run(sweep(item("a")))
    store.run(sweep())
    store.run(sweep(item("a"), complete=False))
    assert store.items[("finding", "a")].misses == 0
    assert store.run(sweep()).events == []


def test_kinds_not_in_sweep_are_untouched() -> None:
    store = DictStore()
    store.run(sweep(item("f"), item("s", kind="score"), kinds={"finding": True, "score": True}))
    for _ in range(4):
        r = store.run(sweep(item("f"), kinds={"finding": True}))
        assert r.events == [] and r.writes == []
    assert store.state("s", "score") == "active"
    assert store.items[("score", "s")].misses == 0


def test_diff_ignores_stored_items_of_kinds_not_swept_even_if_passed_in() -> None:
    store = DictStore()
    store.run(sweep(item("s", kind="score"), kinds={"score": True}))
    # Hand diff the whole store although the sweep only speaks for `finding`.
    r = diff(store.items, sweep(kinds={"finding": True}), DiffPolicy(), source="so",
             vendor="scanorbit", now=T0)
    assert r.events == [] and r.writes == []


def test_only_the_incomplete_kind_is_spared() -> None:
    store = DictStore(DiffPolicy(resolve_after_misses=1))
    store.run(sweep(item("f"), item("s", kind="score"), kinds={"finding": True, "score": True}))
    r = store.run(sweep(kinds={"finding": True, "score": False}))
    assert types(r) == [("f", RESOLVED)]
    assert store.state("s", "score") == "active"


def test_already_resolved_items_do_not_accumulate_misses() -> None:
    store = DictStore()
    store.run(sweep(item("a")))
    store.run(sweep(item("a", active=False)))
    for _ in range(3):
        r = store.run(sweep())
        assert r.events == [] and r.writes == []


# -- reopened ----------------------------------------------------------------------------------


def test_resolved_item_active_again_is_reopened() -> None:
    store = DictStore()
    store.run(sweep(item("a", severity="low")))
    store.run(sweep(item("a", active=False)))
    first_seen = store.items[("finding", "a")].first_seen
    r = store.run(sweep(item("a", severity="high"), complete=False))
    assert types(r) == [("a", REOPENED)]
    assert r.events[0].counter == 3
    assert r.events[0].severity == "high"
    assert store.state("a") == "active"
    assert store.items[("finding", "a")].first_seen == first_seen
    # Tracked values were refreshed by the reopen: no spurious `changed` next time.
    assert store.run(sweep(item("a", severity="high"))).events == []


def test_reopened_after_miss_resolution_then_resolves_again() -> None:
    store = DictStore(DiffPolicy(resolve_after_misses=1))
    store.run(sweep(item("a")))
    store.run(sweep())
    r = store.run(sweep(item("a")))
    assert types(r) == [("a", REOPENED)] and r.events[0].counter == 3
    r = store.run(sweep())
    assert types(r) == [("a", RESOLVED)] and r.events[0].counter == 4
    assert types(store.run(sweep(item("a")))) == [("a", REOPENED)]


# -- ids, duplicates ---------------------------------------------------------------------------


def _history(store: DictStore) -> list[str]:
    ids = []
    for s in (sweep(item("a", severity="low"), item("b")),
              sweep(item("a", severity="high"), item("b")),
              sweep(item("a", active=False), item("b")),
              sweep(item("a")),
              sweep(item("a")),
              sweep(item("a"))):
        ids += [e.id for e in store.run(s).events]
    return ids


def test_event_ids_are_deterministic_and_distinct() -> None:
    first, second = _history(DictStore()), _history(DictStore())
    assert first == second  # a replayed history yields the same ids
    # new a, new b, changed a, resolved a, reopened a, resolved b
    assert len(first) == 6 and len(set(first)) == 6


def test_event_id_depends_on_every_component() -> None:
    base = event_id("s", "finding", "k", NEW, 1)
    assert base == event_id("s", "finding", "k", NEW, 1)
    variants = {
        event_id("s2", "finding", "k", NEW, 1),
        event_id("s", "score", "k", NEW, 1),
        event_id("s", "finding", "k2", NEW, 1),
        event_id("s", "finding", "k", CHANGED, 1),
        event_id("s", "finding", "k", NEW, 2),
    }
    assert base not in variants and len(variants) == 5
    # The separator keeps ("ab","c") and ("a","bc") apart.
    assert event_id("s", "ab", "c", NEW, 1) != event_id("s", "a", "bc", NEW, 1)


def test_same_sweep_replayed_against_same_state_gives_same_ids() -> None:
    store = DictStore()
    store.run(sweep(item("a", severity="low")))
    snapshot = dict(store.items)
    s = sweep(item("a", severity="high"), item("b"))
    r1 = diff(snapshot, s, DiffPolicy(), source="so", vendor="scanorbit", now=T0)
    r2 = diff(snapshot, s, DiffPolicy(), source="so", vendor="scanorbit", now=T0)
    assert [e.id for e in r1.events] == [e.id for e in r2.events]
    assert r1.writes == r2.writes


def test_duplicate_items_in_one_sweep_count_once() -> None:
    store = DictStore()
    r = store.run(sweep(item("a", severity="low"), item("a", severity="high"), item("b")))
    assert types(r) == [("a", NEW), ("b", NEW)]
    assert r.events[0].severity == "low"  # the first copy wins
    assert r.seen == 2
    assert len(r.writes) == 2
    r = store.run(sweep(item("a", severity="low"), item("a", severity="low"), item("b")))
    assert r.events == []


def test_same_key_in_two_kinds_is_two_items() -> None:
    store = DictStore()
    r = store.run(sweep(item("x"), item("x", kind="score"), kinds={"finding": True, "score": True}))
    assert types(r) == [("x", NEW), ("x", NEW)]
    assert len({e.id for e in r.events}) == 2


def test_severity_words_normalize_and_raw_severity_is_kept_on_the_event() -> None:
    store = DictStore()
    r = store.run(sweep(item("a", severity="critical", vendor_severity="CRITICAL")))
    assert r.events[0].vendor_severity == "CRITICAL"


# -- stateful model ----------------------------------------------------------------------------

KEYS = ("k1", "k2", "k3")
MISSES = 2


@dataclass
class Truth:
    """What the vendor really says about one item."""

    listed: bool = False  # appears in a full listing
    active: bool = True
    severity: str = "medium"
    title: str = "t0"


@dataclass
class Expect:
    """What our reference model expects the bridge to believe about one item."""

    state: str | None = None  # None: never created
    misses: int = 0
    tracked: tuple[str, str] | None = None
    history: list[EventType] = field(default_factory=list)
    counters: list[int] = field(default_factory=list)


ALLOWED_NEXT: dict[EventType | None, set[EventType]] = {
    None: {NEW},
    NEW: {CHANGED, RESOLVED},
    CHANGED: {CHANGED, RESOLVED},
    RESOLVED: {REOPENED},
    REOPENED: {CHANGED, RESOLVED},
}


class DiffMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.store = DictStore(DiffPolicy(resolve_after_misses=MISSES,
                                          tracked_fields=("title", "severity")))
        self.truth = {k: Truth() for k in KEYS}
        self.expect = {k: Expect() for k in KEYS}
        self.all_ids: set[str] = set()

    @rule(key=st.sampled_from(KEYS), active=st.booleans())
    def vendor_marks(self, key: str, active: bool) -> None:
        self.truth[key].listed = True
        self.truth[key].active = active

    @rule(key=st.sampled_from(KEYS), severity=st.sampled_from(["low", "medium", "critical"]))
    def vendor_changes_severity(self, key: str, severity: str) -> None:
        self.truth[key].severity = severity

    @rule(key=st.sampled_from(KEYS), title=st.sampled_from(["t0", "t1"]))
    def vendor_changes_title(self, key: str, title: str) -> None:
        self.truth[key].title = title

    @rule(key=st.sampled_from(KEYS))
    def item_vanishes(self, key: str) -> None:
        self.truth[key].listed = False

    @rule(data=st.data(), complete=st.booleans())
    def vendor_churns_then_sweep(self, data: st.DataObject, complete: bool) -> None:
        # Several vendor edits and a sweep in one step, so that histories long enough to
        # matter (seen, missed, seen again, missed twice...) come up often.
        for key in KEYS:
            what = data.draw(st.sampled_from(["same", "vanish", "active", "inactive", "sev"]))
            t = self.truth[key]
            if what == "vanish":
                t.listed = False
            elif what in ("active", "inactive"):
                t.listed, t.active = True, what == "active"
            elif what == "sev":
                t.severity = "critical" if t.severity != "critical" else "low"
        shown = [k for k in KEYS if self.truth[k].listed]
        if not complete:
            shown = [k for k in shown if data.draw(st.booleans())]
        self._sweep(shown, complete=complete)

    @rule(data=st.data())
    def complete_sweep(self, data: st.DataObject) -> None:
        order = data.draw(st.permutations(KEYS))
        self._sweep([k for k in order if self.truth[k].listed], complete=True)

    @rule(data=st.data())
    def incomplete_sweep(self, data: st.DataObject) -> None:
        # A flaky sweep returns an arbitrary subset of what is listed (pages missing), maybe
        # with a page served twice.
        listed = [k for k in KEYS if self.truth[k].listed]
        shown = data.draw(st.lists(st.sampled_from(listed), max_size=4)) if listed else []
        self._sweep(shown, complete=False)

    def _vendor_item(self, key: str) -> Item:
        t = self.truth[key]
        return item(key, active=t.active, severity=t.severity, title=t.title)

    def _sweep(self, keys: list[str], complete: bool) -> None:
        s = Sweep(scope=SCOPE, items=tuple(self._vendor_item(k) for k in keys),
                  kinds={"finding": complete})
        result = self.store.run(s)
        expected = self._model(set(keys), complete)
        got: dict[str, EventType] = {}
        for ev in result.events:
            assert ev.key not in got, f"two events for {ev.key} in one sweep"
            got[ev.key] = ev.type
            if not complete:
                assert ev.type != RESOLVED, "resolved from an incomplete sweep"
            exp = self.expect[ev.key]
            prev = exp.history[-1] if exp.history else None
            assert ev.type in ALLOWED_NEXT[prev], f"{ev.key}: {prev} -> {ev.type}"
            if ev.type == NEW:
                assert NEW not in exp.history
            expected_counter = exp.counters[-1] + 1 if exp.counters else 1
            assert ev.counter == expected_counter
            assert ev.id not in self.all_ids, "event id reused"
            self.all_ids.add(ev.id)
            exp.history.append(ev.type)
            exp.counters.append(ev.counter)
        assert got == expected

    def _model(self, shown: set[str], complete: bool) -> dict[str, EventType]:
        """The reference rules, written independently of bridge/diff.py."""
        out: dict[str, EventType] = {}
        for key in KEYS:
            t, e = self.truth[key], self.expect[key]
            tracked = (t.title, t.severity)
            if key in shown and t.active:
                if e.state is None:
                    out[key] = NEW
                elif e.state == "resolved":
                    out[key] = REOPENED
                elif e.tracked != tracked:
                    out[key] = CHANGED
                e.state, e.misses, e.tracked = "active", 0, tracked
            elif key in shown:  # listed but inactive
                if complete and e.state == "active":
                    out[key] = RESOLVED
                    e.state, e.misses, e.tracked = "resolved", 0, tracked
            elif complete and e.state == "active":
                e.misses += 1
                if e.misses >= MISSES:
                    out[key] = RESOLVED
                    e.state = "resolved"
        return out

    @invariant()
    def store_matches_model(self) -> None:
        if not hasattr(self, "store"):
            return
        for key, e in self.expect.items():
            stored = self.store.items.get(("finding", key))
            if e.state is None:
                assert stored is None
                continue
            assert stored is not None
            assert stored.state == e.state
            assert stored.counter == (e.counters[-1] if e.counters else 0)
            if e.state == "active":
                assert stored.misses == e.misses

    @precondition(lambda self: hasattr(self, "store"))
    @invariant()
    def resolved_only_after_an_active_period(self) -> None:
        for e in self.expect.values():
            for i, t in enumerate(e.history):
                if t == RESOLVED:
                    assert i > 0 and e.history[i - 1] in (NEW, CHANGED, REOPENED)


DiffMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestDiffMachine = DiffMachine.TestCase


# -- the streaming Differ is the same diff ----------------------------------------------------

_vendor_items = st.lists(
    st.builds(lambda key, active, sev: item(key, active=active, severity=sev),
              st.sampled_from((*KEYS, "k4", "k5")), st.booleans(),
              st.sampled_from(["low", "high"])),
    max_size=7)
_sweeps = st.builds(lambda items, complete: sweep(*items, complete=complete), _vendor_items,
                    st.booleans())


@settings(max_examples=200, deadline=None)
@given(history=st.lists(_sweeps, max_size=5), final=_sweeps, cuts=st.lists(
    st.integers(0, 7), max_size=3), misses=st.integers(1, 3))
def test_differ_fed_page_by_page_equals_diff_in_one_go(
        history: list[Sweep], final: Sweep, cuts: list[int], misses: int) -> None:
    store = DictStore(DiffPolicy(resolve_after_misses=misses))
    for s in history:
        store.run(s)
    now = store.now + timedelta(minutes=5)
    whole = diff(store.items, final, store.policy, source="so", vendor="scanorbit", now=now)

    # As the daemon does it: stored rows without snapshots, pages fed one by one with a
    # chunk taken after each, snapshots fetched only for the items `absentees` names.
    bare = {k: dataclasses.replace(v, snapshot=None) for k, v in store.items.items()}
    differ = Differ(bare, store.policy, scope=final.scope, source="so", vendor="scanorbit",
                    now=now)
    events, writes = [], []
    bounds = [0, *sorted(c for c in cuts if c <= len(final.items)), len(final.items)]
    for lo, hi in itertools.pairwise(bounds):
        differ.feed(final.items[lo:hi])
        w, e = differ.take()
        writes += w
        events += e
    wanted = differ.absentees(final.kinds)
    differ.finish(final.kinds, {k: store.items[k].snapshot for k in wanted})  # type: ignore[misc]
    w, e = differ.take()
    writes += w
    events += e
    assert sorted(events, key=lambda ev: ev.id) == sorted(whole.events, key=lambda ev: ev.id)
    assert sorted(writes, key=repr) == sorted(whole.writes, key=repr)
    assert len(differ.seen) == whole.seen


# -- the stored items and what was seen, held without a tuple per item -------------------------


def test_stored_items_read_like_the_dict_of_kind_and_key_they_regroup() -> None:
    store = DictStore()
    store.run(sweep(item("a"), item("b"), item("s", kind="score"),
                    kinds={"finding": True, "score": True}))
    flat = store.items
    grouped = StoredItems.of(flat)
    assert StoredItems.of(grouped) is grouped
    assert grouped == flat and dict(grouped) == flat and len(grouped) == 3
    assert list(grouped) == [("finding", "a"), ("finding", "b"), ("score", "s")]
    assert grouped[("score", "s")] is flat[("score", "s")]
    assert grouped.get(("finding", "b")) is flat[("finding", "b")]
    assert grouped.get(("finding", "s")) is None and grouped.get(("nope", "a"), 1) == 1
    assert ("finding", "a") in grouped and ("score", "a") not in grouped
    assert "a" not in grouped and ("finding",) not in grouped  # type: ignore[comparison-overlap]
    with pytest.raises(KeyError):
        grouped[("score", "a")]


def test_the_differ_keeps_the_stored_key_strings_and_leaves_stored_alone() -> None:
    """What it has seen holds the store's copy of a stored item's key (it lives on anyway) and
    the vendor's copy only of a new one; a key served twice counts once."""
    store = DictStore()
    store.run(sweep(item("known")))
    stored = store.items
    before = dict(stored)
    (stored_key,) = (k for _, k in stored)
    served = "".join(["kn", "own"])  # an equal string, not the same object
    assert served is not stored_key
    differ = Differ(stored, store.policy, scope=SCOPE, source="so", vendor="scanorbit",
                    now=store.now + timedelta(minutes=5))
    differ.feed([item(served), item("fresh"), item(served), item("fresh")])
    (kept,) = (k for k in differ.seen.by_kind["finding"] if k == "known")
    assert kept is stored_key
    assert set(differ.seen) == {("finding", "known"), ("finding", "fresh")}
    assert len(differ.seen) == 2 and ("finding", "fresh") in differ.seen
    assert differ.known("finding", "known") and differ.known("finding", "fresh")
    assert not differ.known("finding", "other") and not differ.known("score", "known")
    assert stored == before
