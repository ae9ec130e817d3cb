"""Scripted misbehaviour for the simulators: the failures real vendor APIs produce, on demand.

A test adds `Fault`s to a world's `FaultPlan`; the shared middleware (`bridge.sim.common`) asks
the plan for a match on every authenticated, non-rate-limited request and applies it. Faults are
matched in the order they were added, so a test can stack e.g. "page 3 times out once, then
page 3 is empty once".
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal[
    "status", "timeout", "truncate", "invalid_json", "reset", "envelope_error", "drift", "empty",
    "schema",
]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "status", "timeout", "truncate", "invalid_json", "reset", "envelope_error", "drift", "empty",
    "schema",
)


@dataclass
class Fault:
    """One scripted failure.

    - `status`: the vendor's error body with HTTP `status` (`code` names the error), plus
      `Retry-After: retry_after` when set.
    - `timeout`: stall `delay` seconds, then answer normally (set it above the client timeout).
    - `truncate`: HTTP 200 with the JSON body cut in half.
    - `invalid_json`: HTTP 200 with a body that is not JSON.
    - `reset`: close the connection (RST) without any response. aiohttp clients silently retry
      an idempotent request once after that, so `times=2` is what a caller actually sees.
    - `envelope_error`: HTTP 200 whose body is the vendor's error shape (for Aether365:
      `success: false`); the same body with an error status is kind `status`.
    - `drift`: serve this page, then insert `drift` new items at the head of the list, so the
      later pages of a newest-first sweep shift by that many.
    - `empty`: a valid envelope with the list emptied but the original pagination totals.
    - `schema`: valid JSON of the wrong shape; `variant` "object" (default) turns the list into
      an object, "missing_id" drops `id` from the first item.
    """

    kind: FaultKind
    path: str = ""
    page: int | None = None
    times: int = 1
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0
    code: str = "INTERNAL_ERROR"
    drift: int = 1
    variant: str = ""
    # How many requests this fault has affected so far.
    hits: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.times == 0 or self.times < -1:
            raise ValueError("times must be >= 1, or -1 for 'until cleared'")
        re.compile(self.path)  # a typo in a test's regex fails at add time, not silently later

    @property
    def exhausted(self) -> bool:
        return self.times != -1 and self.hits >= self.times

    def matches(self, path: str, page: int | None) -> bool:
        if self.exhausted:
            return False
        if self.page is not None and page != self.page:
            return False
        return not self.path or re.search(self.path, path) is not None


class FaultPlan:
    """The pending faults of one simulated vendor, plus a log of what fired.

    `match` both finds and consumes, under a lock, so a fault with `times=1` affects exactly one
    request even if a test thread adds faults while the event loop serves.
    """

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.fired: list[tuple[str, str]] = []

    def __bool__(self) -> bool:
        """Cheap check for the hot path: no faults pending means no matching work at all."""
        return bool(self._faults)

    def __len__(self) -> int:
        return len(self._faults)

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Drop pending faults; the `fired` log is kept so a test can still inspect it."""
        with self._lock:
            self._faults.clear()

    def match(self, path: str, page: int | None) -> Fault | None:
        """The first pending fault for this request, counted as fired; None when none applies."""
        if not self._faults:
            return None
        with self._lock:
            for fault in self._faults:
                if fault.matches(path, page):
                    fault.hits += 1
                    if fault.exhausted:
                        self._faults.remove(fault)
                    self.fired.append((fault.kind, path))
                    return fault
        return None

    def fired_kinds(self) -> list[str]:
        return [kind for kind, _ in self.fired]
