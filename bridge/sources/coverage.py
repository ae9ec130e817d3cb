"""Coverage: what a source can tell about the reach of its own eyes.

A broken connector looks exactly like "no new findings": a ScanOrbit account whose role was
deleted, an Aether365 tenant whose scans stopped or whose plan ran out, a threat category that
lost its consent, an Ayliea key without a scope. Sources report such facts as `Check`s (one per
thing that can be blind, ok or not) each sweep; the pipeline hands them to `Health`, which
makes a broken one a `/readyz` reason (degraded, never unready), sets the
`bridge_source_coverage` gauge and logs when a check changes. With `coverage_events: true` the
source also sweeps them as items of kind `source_health`, so a broken check is a `new` event
(and `resolved` when it recovers) routed like any finding.

A family of checks (all accounts, all threat categories) is replaced whole when the source
evaluates it again, so an account removed upstream stops being reported; a family the sweep did
not evaluate (a skipped sweep, a failed request) keeps its last verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bridge.model import Item, Severity

SOURCE_HEALTH = "source_health"


@dataclass(frozen=True, slots=True)
class Check:
    """One thing that can be blind. `family` groups the checks evaluated together (`accounts`);
    `check` names the kind of check (`account`, `scan_age`, `api_scope`...), bounded for a
    metric label; `subject` what it is about (an account, a category); `detail` says why when
    not ok, in words an operator acts on."""

    family: str
    check: str
    subject: str
    ok: bool
    detail: str = ""

    @property
    def name(self) -> str:
        """The gauge's `check` label and the item key: `check:subject`."""
        return f"{self.check}:{self.subject}" if self.subject else self.check


class Coverage:
    """The latest checks of one source, per scope, replaced family by family."""

    def __init__(self) -> None:
        self._scopes: dict[str, dict[str, tuple[Check, ...]]] = {}

    def report(self, scope: str, family: str, checks: Iterable[Check]) -> None:
        """Everything `family` says about `scope` now (an empty list: nothing to watch)."""
        self._scopes.setdefault(scope, {})[family] = tuple(checks)

    def of(self, scope: str) -> tuple[Check, ...]:
        families = self._scopes.get(scope, {})
        return tuple(c for family in sorted(families) for c in families[family])

    def broken(self, scope: str) -> tuple[Check, ...]:
        return tuple(c for c in self.of(scope) if not c.ok)


def health_items(checks: Sequence[Check], *, tenant: str, vendor: str,
                 severity: Severity = "high") -> list[Item]:
    """The checks as `source_health` items: a broken one is active (a `new` event the first
    time), an ok one is inactive (a `resolved` event if it was broken). The title stays the
    same while a check is broken, so a changing detail (an age in days) is not a `changed`
    event each sweep; the detail travels in the attributes."""
    items: list[Item] = []
    for c in checks:
        subject = f" {c.subject}" if c.subject else ""
        items.append(Item(
            kind=SOURCE_HEALTH, key=c.name, title=f"{vendor} coverage: {c.check}{subject}",
            severity=severity, active=not c.ok, status="ok" if c.ok else "broken",
            resolution="coverage restored" if c.ok else "", tenant=tenant,
            attributes={"check": c.check, "subject": c.subject, "detail": c.detail or None},
        ))
    return items
