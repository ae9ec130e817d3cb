"""Serve one simulator in its own process, so benchmarks measure bridge's CPU, not the sim's.

    python bench/sim_server.py scanorbit --findings 100000

prints the base URL on its first line, then serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld, make_app

BENCH_FAKE_SIM_KEY = "sk_live_" + "fedcba9876543210" * 4  # fake sim key


async def serve(findings: int) -> None:
    world = ScanOrbitWorld(api_keys={BENCH_FAKE_SIM_KEY}, seed=3, rate_limit=10**9)
    world.bulk_add(findings)
    world.complete_scan()
    async with RunningSim(make_app(world)) as sim:
        print(sim.url, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("vendor", choices=["scanorbit"])
    parser.add_argument("--findings", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(serve(args.findings))


if __name__ == "__main__":
    main()
