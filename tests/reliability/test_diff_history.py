"""The diff engine against the true history of every item, with crashes.

A hypothesis state machine drives a small upstream world (items appear, vanish, come back,
turn inactive, change severity or title) and sweeps it the way the daemon does: pages fed to
the real `Differ`, a chunk committed now and then, the rest committed with the sweep — unless
the process "crashes" first, which throws away whatever was not committed. Sweeps may be
incomplete (pages missing or served twice). What was committed is what sinks receive.

The judge is the chaos runs' own oracle (`tests.support.ledger`), which knows nothing of the
diff's rules: no lost transition, no `resolved` unless the item was really gone or inactive
in the window that sweep could see, every settled state reported, the final state right.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from bridge.diff import Differ, DiffPolicy, StoredItem
from bridge.model import Event, Item
from tests.core._helpers import apply_writes
from tests.support.ledger import Ledger, Received, Truth, judge

SCOPE, KIND = "so", "finding"
KEYS = ("k1", "k2", "k3", "k4")
SEVERITIES = ("low", "medium", "critical")


class DiffHistory(RuleBasedStateMachine):
    @initialize(misses=st.integers(1, 3))
    def setup(self, misses: int) -> None:
        self.policy = DiffPolicy(resolve_after_misses=misses)
        self.clock = 0.0
        self.ledger = Ledger()
        self.truth: dict[str, Truth] = {}
        self.store: dict[tuple[str, str], StoredItem] = {}
        self.received: list[Received] = []
        self.sweep_ends: dict[tuple[str, float], float] = {}

    def tick(self) -> float:
        self.clock += 1.0
        return self.clock

    def record(self) -> None:
        self.ledger.record(self.tick(), {(SCOPE, KIND, k): t for k, t in self.truth.items()
                                         if t.present}, [SCOPE])

    # -- the world

    @rule(key=st.sampled_from(KEYS), severity=st.sampled_from(SEVERITIES),
          title=st.sampled_from(["t0", "t1"]), active=st.booleans())
    def vendor_lists(self, key: str, severity: str, title: str, active: bool) -> None:
        self.truth[key] = Truth(True, active, severity, title, "open" if active else "resolved")
        self.record()

    @rule(key=st.sampled_from(KEYS))
    def vanishes(self, key: str) -> None:
        self.truth.pop(key, None)
        self.record()

    # -- sweeps

    def listed(self) -> list[Item]:
        return [Item(kind=KIND, key=k, title=t.title, severity=t.severity,  # type: ignore[arg-type]
                     active=t.active, status=t.status,
                     resolution="" if t.active else "vendor status resolved")
                for k, t in sorted(self.truth.items())]

    def deliver(self, events: list[Event], end: float) -> None:
        self.received += [Received.of("sink", e.to_dict(), end) for e in events]

    def sweep(self, items: list[Item], complete: bool, pages: list[int], chunk_after: set[int],
              crash_after: int | None) -> None:
        """Feed `items` in pages; commit a chunk after the pages in `chunk_after`; crash after
        page `crash_after` (None: finish and commit)."""
        start = self.tick()
        end = start + 0.5
        stored = {k: v for k, v in self.store.items()}
        differ = Differ(stored, self.policy, scope=SCOPE, source="so", vendor="scanorbit",
                        now=datetime.fromtimestamp(start, UTC))
        offset = 0
        for n, size in enumerate(pages):
            differ.feed(items[offset:offset + size])
            offset += size
            if crash_after == n:
                return  # whatever was not committed is gone; the next sweep starts over
            if n in chunk_after:
                writes, events = differ.take()
                apply_writes(self.store, writes)
                self.deliver(events, end)
        differ.feed(items[offset:])
        kinds = {KIND: complete}
        wanted = differ.absentees(kinds)
        differ.finish(kinds, {k: stored[k].snapshot for k in wanted})  # type: ignore[misc]
        writes, events = differ.take()
        if not complete:
            assert all(e.type.value != "resolved" for e in events), "resolved by a partial sweep"
        apply_writes(self.store, writes)
        self.deliver(events, end)
        self.sweep_ends[(SCOPE, start)] = end

    @rule(data=st.data(), crash=st.booleans())
    def complete_sweep(self, data: st.DataObject, crash: bool) -> None:
        items = data.draw(st.permutations(self.listed()))
        pages = data.draw(st.lists(st.integers(0, 3), max_size=3))
        chunks = set(data.draw(st.lists(st.integers(0, 2), max_size=2)))
        crash_after = data.draw(st.integers(0, max(0, len(pages) - 1))) if crash and pages \
            else None
        self.sweep(items, True, pages, chunks, crash_after)

    @rule(data=st.data())
    def incomplete_sweep(self, data: st.DataObject) -> None:
        listed = self.listed()
        # Pages lost, pages served twice: any sub-multiset of what is listed.
        items = data.draw(st.lists(st.sampled_from(listed), max_size=6)) if listed else []
        pages = data.draw(st.lists(st.integers(0, 3), max_size=3))
        self.sweep(items, False, pages, set(data.draw(st.lists(st.integers(0, 2), max_size=2))),
                   None)

    @rule()
    def world_holds_still_until_swept(self) -> None:
        """A settle point: enough clean complete sweeps for the world to be fully seen."""
        self.ledger.settle(self.clock + 0.25)
        for _ in range(self.policy.resolve_after_misses):
            self.sweep(self.listed(), True, [], set(), None)

    # -- the verdict

    def verdict_problems(self) -> list[str]:
        counters = {(SCOPE, KIND, key): s.counter for (_, key), s in self.store.items()}
        v = judge(self.ledger, {"sink": self.received}, counters, [], self.sweep_ends)
        return [] if v.ok else v.problems

    @invariant()
    def nothing_lost_or_falsely_resolved_so_far(self) -> None:
        if not hasattr(self, "ledger"):
            return
        counters = {(SCOPE, KIND, key): s.counter for (_, key), s in self.store.items()}
        v = judge(self.ledger, {"sink": self.received}, counters, [], self.sweep_ends)
        # Mid-history the final state may lag the world (nothing swept it yet); everything
        # else must hold at every step.
        assert not (v.lost or v.false_resolved or v.skipped_states or v.id_mismatches
                    or v.unexplained_duplicates), v.problems

    def teardown(self) -> None:
        if not hasattr(self, "ledger"):
            return
        self.world_holds_still_until_swept()
        problems = self.verdict_problems()
        assert not problems, problems


DiffHistory.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestDiffHistory = DiffHistory.TestCase
