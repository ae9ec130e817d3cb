"""The independent ledger of a chaos run and the oracle that judges what the sinks received.

Nothing here imports the daemon's diff or store: the ledger is written from the simulated
worlds' own records (what was *really* upstream, and when), and the oracle judges received
events against it with rules stated from the product's promise, not from its code:

- **lost**: every transition the daemon committed carries the next counter of its item, so an
  item's events must arrive at every sink with counters 1..n without a gap, where n is the
  item's final counter in the state store; and the last one must describe the item's final
  upstream state (active with its severity, vendor severity, title and status; or resolved).
  The vendor's own severity word is part of the state because it is tracked by default: a
  vendor-side change must be a `changed` event even when the normalised severity stays.
- **settled states**: at a *settle point* the world held still until the daemon had completed
  enough full sweeps to see it, so the item's event sequence must pass through that state.
- **phantom states**: a `new`, `changed` or `reopened` must describe a state (severity, vendor
  severity, title, status) the item really had at some moment of the sweep that reported it.
- **false resolved**: a `resolved` is only allowed if, at some moment between the previous event
  of the item (when the sweep that produced it started) and the end of the sweep that resolved
  it, the item really was gone (absence) or listed as inactive (vendor resolution).
- **duplicates**: the same id only (one id per item, counter and type), and each extra copy
  explained by a crash that happened while that event was in flight to that sink.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ItemId = tuple[str, str, str]  # (scope, kind, key)
ACTIVE_TYPES = frozenset({"new", "changed", "reopened"})


@dataclass(frozen=True, slots=True)
class Truth:
    """What the vendor really showed for one item at one moment."""

    present: bool
    active: bool = False
    severity: str = ""
    title: str = ""
    status: str = ""
    vendor_severity: str = ""  # the vendor's word, as the item carries it (`priority 3`)

    @property
    def live(self) -> bool:
        return self.present and self.active

    def state(self) -> tuple[str, str, str, str, str] | None:
        """The state a sink must end up believing: ("active", severity, vendor severity, title,
        status), or None for "not live" (resolved, or never reported at all)."""
        return (("active", self.severity, self.vendor_severity, self.title, self.status)
                if self.live else None)


GONE = Truth(present=False)


@dataclass
class Settle:
    """The world held still from `at` until the daemon had swept it completely enough times."""

    at: float
    truth: dict[ItemId, Truth]


class Ledger:
    """Every item's true history: a time-ordered list of (time, Truth) per item."""

    def __init__(self) -> None:
        self.history: dict[ItemId, list[tuple[float, Truth]]] = {}
        self._times: dict[ItemId, list[float]] = {}
        self.settles: list[Settle] = []
        self.changes = 0
        self.last_change = 0.0

    def record(self, now: float, truths: Mapping[ItemId, Truth], scopes: Iterable[str]) -> int:
        """The current truth of every item of `scopes`; items of those scopes that are no
        longer listed become GONE. Returns how many items changed."""
        scopes = set(scopes)
        changed = 0
        for ident, truth in truths.items():
            changed += self._set(ident, now, truth)
        for ident, hist in self.history.items():
            if ident[0] in scopes and ident not in truths and hist[-1][1] != GONE:
                changed += self._set(ident, now, GONE)
        return changed

    def _set(self, ident: ItemId, now: float, truth: Truth) -> int:
        hist = self.history.setdefault(ident, [])
        if hist and hist[-1][1] == truth:
            return 0
        if not hist and not truth.present:
            return 0
        if hist and now < hist[-1][0]:
            now = hist[-1][0]  # the wall clock stepped back: keep each history ordered
        hist.append((now, truth))
        self._times.setdefault(ident, []).append(now)
        self.changes += 1
        self.last_change = max(self.last_change, now)
        return 1

    def truth(self, ident: ItemId) -> Truth:
        hist = self.history.get(ident)
        return hist[-1][1] if hist else GONE

    def truth_at(self, ident: ItemId, t: float) -> Truth:
        times = self._times.get(ident, [])
        i = bisect.bisect_right(times, t)
        return self.history[ident][i - 1][1] if i else GONE

    def during(self, ident: ItemId, t0: float, t1: float) -> list[Truth]:
        """Every truth the item had at some moment of [t0, t1]."""
        out = [self.truth_at(ident, t0)]
        times = self._times.get(ident, [])
        hist = self.history.get(ident, [])
        for i in range(bisect.bisect_right(times, t0), bisect.bisect_right(times, t1)):
            out.append(hist[i][1])
        return out

    def settle(self, at: float) -> Settle:
        s = Settle(at, {ident: hist[-1][1] for ident, hist in self.history.items()})
        self.settles.append(s)
        return s

    def discard_settle(self, s: Settle) -> None:
        self.settles.remove(s)


# --- what the sinks received ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Received:
    """One event as one sink received it."""

    sink: str
    id: str
    type: str
    scope: str
    kind: str
    key: str
    counter: int
    severity: str
    title: str
    status: str
    reason: str
    vendor_severity: str
    occurred_at: float
    at: float | None = None  # when the receiver got it, when known

    @property
    def item(self) -> ItemId:
        return (self.scope, self.kind, self.key)

    @property
    def content(self) -> tuple[Any, ...]:
        return (self.type, self.scope, self.kind, self.key, self.counter, self.severity,
                self.vendor_severity, self.title, self.status, self.reason, self.occurred_at)

    @classmethod
    def of(cls, sink: str, body: Mapping[str, Any], at: float | None = None) -> Received:
        return cls(sink=sink, id=str(body["id"]), type=str(body["type"]), scope=str(body["scope"]),
                   kind=str(body["kind"]), key=str(body["key"]), counter=int(body["counter"]),
                   severity=str(body["severity"]), title=str(body["title"]),
                   status=str(body.get("status", "")), reason=str(body.get("reason", "")),
                   vendor_severity=str(body.get("vendor_severity", "")),
                   occurred_at=datetime.fromisoformat(str(body["occurred_at"])).timestamp(),
                   at=at)


def expected_event_id(scope: str, kind: str, key: str, type_: str, counter: int) -> str:
    """The documented id scheme (ARCHITECTURE.md, idempotency), restated independently."""
    material = "\x1f".join((scope, kind, key, type_, str(counter)))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclass
class Crash:
    """One SIGKILL: what each sink had in flight (its next batch in the outbox) at that moment."""

    at: float
    mode: str
    inflight: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class Verdict:
    events: int = 0  # distinct events (ids) checked
    deliveries: int = 0  # receptions checked, every sink
    items: int = 0
    lost: int = 0
    duplicated: int = 0
    unexplained_duplicates: int = 0
    false_resolved: int = 0
    wrong_final: int = 0
    skipped_states: int = 0
    phantom_states: int = 0
    id_mismatches: int = 0
    settles_checked: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(text)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.unexplained_duplicates or self.false_resolved
                    or self.wrong_final or self.skipped_states or self.id_mismatches
                    or self.phantom_states)


def _describe(truth: Truth) -> str:
    if not truth.present:
        return "gone"
    return f"{'active' if truth.active else 'inactive'} {truth.status} {truth.severity}"


def _state_after(event: Received | None) -> tuple[str, str, str, str, str] | None:
    if event is None or event.type == "resolved":
        return None
    return ("active", event.severity, event.vendor_severity, event.title, event.status)


def judge(
    ledger: Ledger,
    received: Mapping[str, list[Received]],
    final_counters: Mapping[ItemId, int],
    crashes: list[Crash],
    sweep_ends: Mapping[tuple[str, float], float] | None = None,
) -> Verdict:
    """Compare what every sink received with the ledger.

    `final_counters`: each item's transition counter in the state store at the end (how many
    events it must have had). `sweep_ends`: (scope, sweep start) -> sweep end, to bound when a
    resolving sweep could have looked; without it, the earliest reception stands in.
    """
    v = Verdict()
    sweep_ends = sweep_ends or {}
    sinks = sorted(received)

    # One canonical event per (item, counter); every copy must be identical to it.
    canon: dict[tuple[ItemId, int], Received] = {}
    first_seen: dict[str, float] = {}
    by_id: dict[str, Received] = {}
    for sink in sinks:
        for r in received[sink]:
            v.deliveries += 1
            if r.id != expected_event_id(r.scope, r.kind, r.key, r.type, r.counter):
                v.id_mismatches += 1
                v.problem(f"{sink}: event {r.id} does not carry the id of {r.item} "
                          f"{r.type} #{r.counter}")
            other = by_id.setdefault(r.id, r)
            if other.content != r.content:
                v.id_mismatches += 1
                v.problem(f"{sink}: two different events share id {r.id}: {other} / {r}")
            slot = canon.setdefault((r.item, r.counter), r)
            if slot.id != r.id:
                v.id_mismatches += 1
                v.problem(f"{sink}: {r.item} #{r.counter} arrived as {slot.type} {slot.id} and "
                          f"as {r.type} {r.id}")
            if r.at is not None:
                first_seen[r.id] = min(first_seen.get(r.id, r.at), r.at)
    v.events = len(by_id)

    items = set(final_counters) | {item for item, _ in canon}
    v.items = len(items)
    top: dict[ItemId, int] = defaultdict(int)
    for item, counter in canon:
        top[item] = max(top[item], counter)

    # Lost: per sink, counters 1..n with n the item's final counter in the store.
    per_sink: dict[str, dict[ItemId, set[int]]] = {s: defaultdict(set) for s in sinks}
    for sink in sinks:
        for r in received[sink]:
            per_sink[sink][r.item].add(r.counter)
    for item in sorted(items):
        n = max(final_counters.get(item, 0), top[item])
        for sink in sinks:
            got = per_sink[sink].get(item, set())
            missing = [c for c in range(1, n + 1) if c not in got]
            if missing:
                v.lost += len(missing)
                v.problem(f"{sink}: lost {item} events #{missing[:10]} (of 1..{n})")

    # Duplicates: only identical ids, each extra copy explained by a crash with it in flight.
    for sink in sinks:
        counts = Counter(r.id for r in received[sink])
        for event_id, n in counts.items():
            if n == 1:
                continue
            v.duplicated += n - 1
            explained = sum(1 for c in crashes if event_id in c.inflight.get(sink, ()))
            if n - 1 > explained:
                v.unexplained_duplicates += n - 1 - explained
                v.problem(f"{sink}: {event_id} ({by_id[event_id].item} {by_id[event_id].type}) "
                          f"arrived {n} times; only {explained} crash(es) had it in flight")

    # Per item: the sequence of states, the settle points it must pass through, the final
    # state, and whether each resolution had a reason in the world.
    sequences: dict[ItemId, list[Received]] = defaultdict(list)
    for (item, _), r in sorted(canon.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        sequences[item].append(r)
    for item in sorted(items):
        seq = sequences.get(item, [])
        states = [None, *(_state_after(r) for r in seq)]
        # Settled states, in order (a greedy earliest match decides whether a subsequence exists).
        j = 0
        for s in ledger.settles:
            want = s.truth.get(item, GONE).state()
            if item not in s.truth and not seq:
                continue
            k = next((i for i in range(j, len(states)) if states[i] == want), None)
            if k is None:
                v.skipped_states += 1
                v.problem(f"{item}: never reported the state it settled in at {s.at:.3f}: "
                          f"{want}; reported {states[j:]}")
                break
            j = k
        final = ledger.truth(item).state()
        if states[-1] != final:
            v.wrong_final += 1
            v.problem(f"{item}: last reported state {states[-1]} but upstream ends as {final}")
        for i, r in enumerate(seq):
            end = sweep_ends.get((r.scope, r.occurred_at)) or first_seen.get(r.id)
            if end is None:  # no bound known: as lenient as can be
                end = float("inf")
            if r.type != "resolved":
                reported = _state_after(r)
                if all(t.state() != reported for t in ledger.during(item, r.occurred_at, end)):
                    v.phantom_states += 1
                    v.problem(f"{item}: #{r.counter} {r.type} reported {reported}, which "
                              f"upstream never was between {r.occurred_at:.3f} and {end:.3f}")
                continue
            start = seq[i - 1].occurred_at if i else r.occurred_at
            seen = ledger.during(item, start, end)
            if r.reason.startswith("absent"):
                reason_ok = any(not t.present for t in seen)
            else:
                reason_ok = any(t.present and not t.active for t in seen)
            if not reason_ok:
                v.false_resolved += 1
                shown = sorted({_describe(t) for t in seen})
                v.problem(f"{item}: FALSE RESOLVED #{r.counter} ({r.reason!r}): upstream was only "
                          f"{shown} from {start:.3f} to {end:.3f}")
    v.settles_checked = len(ledger.settles)
    return v
