"""Run every benchmark: `python bench/run.py` (or `python bench/run.py core syslog webhook`).

Each `bench/bench_<name>.py` has a `main() -> int` that prints its absolute figures and its
ratio against the target, and returns non-zero when a target is missed.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    known = sorted(p.stem.removeprefix("bench_") for p in (ROOT / "bench").glob("bench_*.py"))
    unknown = [name for name in argv if name not in known]
    if unknown:
        print(f"usage: python bench/run.py [{' '.join(known)}] (not {', '.join(unknown)})",
              file=sys.stderr)
        return 2
    names = argv or known
    missed = []
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== {name} ==", flush=True)
        start = time.perf_counter()
        code = module.main()
        print(f"   ({time.perf_counter() - start:.0f} s)\n", flush=True)
        if code:
            missed.append(name)
    print("all targets met" if not missed else f"targets missed: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
