"""The first sweep of a scope: what a fresh install (or a new tenant) does with the world it
finds already there, before any item is "new".

Pointing bridge at a real estate would otherwise send tens of thousands of open findings to
every sink at once. Each sink gets one of three modes for a scope's baseline:

- `deliver`: every item as a `new` event, as if nothing were special;
- `summary`: one `summary` event per scope and sink, counts by kind and severity;
- `suppress`: nothing; the items are recorded as known.

Either way the items are stored, so only items first seen in a later sweep are `new`, and every
event not delivered is recorded with why (`Muted`). The mode is chosen, most specific first, by
the route that sent the event to the sink (`baseline:` on a route, inherited by its children),
the source (`baseline:` on a source), then the sink's kind (`SinkConfig.default_baseline`:
`summary` for ticketing and chat, `deliver` for syslog, files and webhooks).

A scope's baseline lasts until one of its sweeps commits complete or incomplete (a failed sweep
keeps it pending): an incomplete first sweep ends it too, because a scope that is never complete
(a tenant without one licence) must not stay muted forever. What such a sweep could not read
arrives later as `new`: bridge would rather send a known item than mute a new one. The end is
remembered in the scope's cursor (`BASELINE_CURSOR`), committed in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from bridge.model import SEVERITIES, SEVERITY_RANK, Event, EventType, Severity, event_id, utcnow

Baseline = Literal["deliver", "summary", "suppress"]
# Cursor names starting with this belong to bridge, not to the source (which never sees them).
RESERVED_CURSOR_PREFIX = "bridge."
BASELINE_CURSOR = "bridge.baseline"  # when the scope's baseline ended (ISO time)
SUMMARY_KIND = "baseline"
# (kind, severity) -> items
Counts = Mapping[tuple[str, str], int]


def mode_for(sink: str, route_override: Baseline | None, source_mode: Baseline | None,
             sink_defaults: Mapping[str, Baseline]) -> Baseline:
    """The baseline mode of one event for one sink, most specific setting first."""
    return route_override or source_mode or sink_defaults.get(sink, "deliver")


def source_cursor(cursor: Mapping[str, str]) -> dict[str, str]:
    """The cursor as the source sees it: without bridge's own entries."""
    return {k: v for k, v in cursor.items() if not k.startswith(RESERVED_CURSOR_PREFIX)}


def summary_event(*, scope: str, source: str, vendor: str, sink: str, counts: Counts) -> Event:
    """The one event that stands for a scope's baseline at one sink. Its id is derived from
    (scope, sink), so a replayed commit sends the same summary, never a second one."""
    total = sum(counts.values())
    by_severity = {s: sum(n for (_, sev), n in counts.items() if sev == s) for s in SEVERITIES}
    by_kind: dict[str, int] = {}
    for (kind, _), n in sorted(counts.items()):
        by_kind[kind] = by_kind.get(kind, 0) + n
    present = [s for s in SEVERITIES if by_severity[s]]
    severity: Severity = max(present, key=SEVERITY_RANK.__getitem__) if present else "info"
    shown = ", ".join(f"{by_severity[s]} {s}" for s in reversed(SEVERITIES) if by_severity[s])
    return Event(
        id=event_id(scope, SUMMARY_KIND, sink, EventType.SUMMARY, 1), type=EventType.SUMMARY,
        source=source, vendor=vendor, scope=scope, kind=SUMMARY_KIND, key=sink,
        title=f"Baseline of {scope}: {total} open item(s) recorded as known"
              + (f" ({shown})" if shown else ""),
        severity=severity, occurred_at=utcnow(), counter=1,
        reason="first sweep of this scope (baseline: summary): items are not sent one by one; "
               "only items first seen later are new",
        attributes={"total": total, **{f"severity_{s}": n for s, n in by_severity.items()},
                    **{f"kind_{k}": n for k, n in by_kind.items()}},
        raw={"counts": {k: {s: n for (kk, s), n in counts.items() if kk == k}
                        for k in by_kind}},
    )


def add_counts(into: dict[tuple[str, str], int], events: Iterable[Event]) -> None:
    for e in events:
        into[(e.kind, e.severity)] = into.get((e.kind, e.severity), 0) + 1
