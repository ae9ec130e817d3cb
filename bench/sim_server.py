"""Serve one simulator in its own process, so benchmarks measure bridge's CPU, not the sim's.

    python bench/sim_server.py scanorbit --findings 100000
    python bench/sim_server.py aether365 --tenants 50 --results 2000

prints the base URL on its first line, then serves until stdin closes. A line `rescan` on stdin
(Aether365) completes a new scan of every tenant with the same results (what a steady sweep
of a tenant meets), answered by a line `ok`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.sim.aether365 import Aether365World
from bridge.sim.aether365 import make_app as make_aether365_app
from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld, make_app

BENCH_FAKE_SIM_KEY = "sk_live_" + "fedcba9876543210" * 4  # fake sim key


def aether365_token(tenant: int) -> str:
    return f"ae_live_fake_bench_{tenant:04d}_" + "0123456789abcdef"  # fake sim key


async def serve(args: argparse.Namespace) -> None:
    rescan = None
    if args.vendor == "scanorbit":
        world = ScanOrbitWorld(api_keys={BENCH_FAKE_SIM_KEY}, seed=3, rate_limit=10**9)
        world.bulk_add(args.findings)
        world.complete_scan()
        app = make_app(world)
    else:
        tenants = {aether365_token(t): f"tenant-{t:04d}" for t in range(args.tenants)}
        a365 = Aether365World(tokens=tenants, seed=3, rate_limit=10**9)
        for tenant in tenants.values():
            for i in range(args.results):
                a365.set_test(tenant, f"AE.{i:06d}", "failed")
            a365.run_scan(tenant)

        def rescan() -> None:
            for tenant in tenants.values():
                a365.run_scan(tenant)

        app = make_aether365_app(a365)
    async with RunningSim(app) as sim:
        print(sim.url, flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip() == "rescan" and rescan is not None:
                rescan()
                print("ok", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("vendor", choices=["scanorbit", "aether365"])
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--results", type=int, default=2_000)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
