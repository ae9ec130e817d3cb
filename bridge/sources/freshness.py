"""When to re-read a list the vendor's cheap probe says has not changed.

A person who snoozes a ScanOrbit finding or completes an Ayliea recommendation in the vendor's
UI changes the list without a scan or an assessment, so the probe cannot see it; only a full
re-read can. Re-reading is cheap for a small estate and costly for a big one, so the cadence
is chosen from the vendor's rate budget: when the last full read cost at most
`resweep_budget_share` of the requests one `interval` allows, every sweep re-reads (person-made
changes show within one interval); otherwise every `full_resweep_interval` (the bound).
"""

from __future__ import annotations

from collections.abc import Mapping

CURSOR_FULL = "last_full_sweep_at"
CURSOR_COST = "last_full_sweep_requests"


def full_read_due(cursor: Mapping[str, str], *, now: float, full_resweep_interval: float,
                  interval: float, per_minute: float, share: float) -> bool:
    """True when a full read is due although the probe saw nothing new."""
    last = float(cursor.get(CURSOR_FULL, "0") or 0)
    if now - last >= full_resweep_interval:
        return True
    cost = int(cursor.get(CURSOR_COST, "0") or 0)
    if cost <= 0 or share <= 0:
        return False  # cost unknown (a cursor from before this was recorded): the bound rules
    return cost <= share * per_minute * interval / 60.0


def full_read_cursor(now: float, requests: int) -> dict[str, str]:
    """What a complete full read leaves in the cursor for the next decision."""
    return {CURSOR_FULL: str(now), CURSOR_COST: str(requests)}
