"""The long chaos mode: several seeded runs of the real daemon under SIGKILLs, upstream faults
and sink outages, judged against an independent ledger (tests/reliability/test_chaos.py).

Targets: 0 lost events, 0 false resolved, 0 duplicates beyond what was in flight at a crash
(or in a syslog resend window at a receiver restart), 0 secrets anywhere.

    python bench/bench_chaos.py [runs] [seed]     (or: python bench/run.py chaos)
    BRIDGE_CHAOS_RUNS=5 BRIDGE_CHAOS_SEED=123 python bench/bench_chaos.py
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reliability.test_chaos import chaos_settings  # noqa: E402
from tests.support.chaos import ChaosReport, run_chaos  # noqa: E402

TOTALS = ("crashes_injected", "upstream_faults_fired", "key_revocations", "world_changes",
          "dead_letters_replayed", "events_checked", "deliveries_checked", "lost", "duplicated",
          "inflight_at_crashes", "unexplained_duplicates", "false_resolved", "wrong_final_state",
          "skipped_settled_states", "phantom_states", "secret_leaks")


def main(argv: list[str] | None = None) -> int:
    """`argv`: [runs [seed]] as on the command line; none when `bench/run.py` calls it (its own
    arguments are benchmark names, not ours)."""
    argv = argv or []
    runs = int(argv[0]) if argv else int(os.environ.get("BRIDGE_CHAOS_RUNS", "3"))
    base = int(argv[1]) if len(argv) > 1 else int(
        os.environ.get("BRIDGE_CHAOS_SEED") or random.SystemRandom().randrange(1, 2**31))
    rsyslogd = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd"
                                            if os.access("/usr/sbin/rsyslogd", os.X_OK) else None)
    print(f"chaos (long mode): {runs} run(s) from seed {base}"
          f"{'' if rsyslogd else ' (no rsyslogd: file and webhook sinks only)'}", flush=True)
    reports: list[ChaosReport] = []
    with tempfile.TemporaryDirectory(prefix="bridge-chaos-") as tmp:
        for n in range(runs):
            seed = base + n
            report = asyncio.run(run_chaos(chaos_settings(seed, long=True),
                                           Path(tmp) / f"run-{seed}", rsyslogd))
            reports.append(report)
            print(report.summary(), flush=True)
    totals: dict[str, Any] = {"runs": len(reports)}
    for key in TOTALS:
        totals[key] = sum(int(r.figures()[key]) for r in reports)
    totals["seeds"] = [r.seed for r in reports]
    totals["seconds"] = round(sum(r.seconds for r in reports), 1)
    print(json.dumps(totals, indent=2))
    ok = all(r.ok for r in reports)
    print(f"  runs {totals['runs']}, crashes injected {totals['crashes_injected']}, events "
          f"checked {totals['events_checked']}, lost {totals['lost']}, duplicated "
          f"{totals['duplicated']} (unexplained {totals['unexplained_duplicates']}), false "
          f"resolved {totals['false_resolved']}")
    print(f"  targets: lost 0, false resolved 0, unexplained duplicates 0, secret leaks 0: "
          f"{'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
