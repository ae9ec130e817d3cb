"""Many tenants in one process (issue 23): Aether365 with 50 tenants x 2,000 compliance results.

The simulator serves every tenant from its own process. The floor is each tenant's pages
fetched and decoded one tenant after another (its scan list, then its result pages), summed;
bridge sweeps all tenants at once, as the daemon's schedule does (tenants in parallel up to
their rate limits, unlimited here). Target: a steady sweep of all tenants (a new scan whose
results did not change: every page is read and diffed, nothing is sent) within 1.2x of the
sum of the floors. The first sweep (100,000 new results committed to the outbox) is shown
beside it, with its CPU against the floor's.

    python bench/bench_tenants.py        (or: python bench/run.py tenants)
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import scratch_dir  # noqa: E402
from bench.sim_server import aether365_token  # noqa: E402

TENANTS = 50
RESULTS = 2_000
PAGE = 200  # the largest page Aether365 serves
TARGET = 1.2


async def floor(url: str) -> tuple[float, float]:
    """Every tenant's scan list and result pages fetched and decoded, one tenant after another:
    (wall, CPU) seconds."""
    import aiohttp
    import orjson

    cpu, wall = time.process_time(), time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for tenant in range(TENANTS):
            headers = {"Authorization": f"Bearer {aether365_token(tenant)}"}
            async with session.get(f"{url}/tenants/me/scans", headers=headers,
                                   params={"status": "completed", "limit": 1}) as resp:
                scan = orjson.loads(await resp.read())["data"][0]["id"]
            for page in range(1, -(-RESULTS // PAGE) + 1):
                async with session.get(f"{url}/scans/{scan}/results", headers=headers,
                                       params={"page": page, "limit": PAGE}) as resp:
                    orjson.loads(await resp.read())
    return time.perf_counter() - wall, time.process_time() - cpu


async def run(url: str, control: IO[str], answers: IO[str]) -> dict[str, float]:
    from bridge.config import parse_config
    from bridge.health import Health
    from bridge.logging import LogConfig, configure_logging
    from bridge.pipeline import Pipeline
    from bridge.store.sqlite import SQLiteStore

    configure_logging(LogConfig(level="warning"))
    tmp = scratch_dir("bridge-bench-tenants-")
    config = parse_config({
        "state": {"path": str(tmp / "bridge.db")},
        "admin": {"enabled": False},
        "log": {"level": "warning"},
        "sources": [{"name": "a365", "type": "aether365", "base_url": url, "jitter": 0,
                     "threats": False, "policies": False,
                     "http": {"rate_limit_per_minute": 10**7, "burst": 10**6},
                     "tenants": [{"name": f"t{t:04d}", "api_key": aether365_token(t)}
                                 for t in range(TENANTS)]}],
        "sinks": [{"name": "siem", "type": "file", "path": str(tmp / "events.jsonl")}],
        "routes": {"sinks": ["siem"]},
    })
    store = SQLiteStore(config.state.path)
    await store.open()
    pipeline = Pipeline.build(config, store, Health())
    source = pipeline.sources["a365"]
    out: dict[str, float] = {}

    async def sweep_all() -> tuple[float, float, int]:
        cpu, wall = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(pipeline.sweep(source, s) for s in source.scopes))
        assert all(r is not None and r.record.outcome == "complete" for r in results), results
        return (time.perf_counter() - wall, time.process_time() - cpu,
                sum(r.record.events for r in results if r is not None))

    await floor(url)  # warm the simulator
    out["first_wall"], out["first_cpu"], out["first_events"] = await sweep_all()
    floors, cpus, steadies = [], [], []
    for _ in range(3):
        wall, cpu = await floor(url)
        floors.append(wall)
        cpus.append(cpu)
        control.write("rescan\n")  # a new scan of every tenant, the same results
        control.flush()
        assert answers.readline().strip() == "ok"
        wall, _, events = await sweep_all()
        assert events == 0, events
        steadies.append(wall)
    out["floor"], out["floor_cpu"], out["steady"] = min(floors), min(cpus), min(steadies)
    await pipeline.stop(1)
    await store.close()
    return out


def main() -> int:
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sim_server.py"), "aether365",
                               "--tenants", str(TENANTS), "--results", str(RESULTS)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdin is not None
        url = server.stdout.readline().strip()
        r = asyncio.run(run(url, server.stdin, server.stdout))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(30)
    ratio = r["steady"] / r["floor"]
    print(f"tenants: Aether365, {TENANTS} tenants x {RESULTS:,} results in one process, "
          "simulator in another; all tenants swept at once")
    print(f"  sum of fetch+decode floors  {r['floor']:.2f} s wall, {r['floor_cpu']:.2f} s CPU")
    print(f"  first sweep                 {r['first_wall']:.2f} s wall, {r['first_cpu']:.2f} s CPU "
          f"({int(r['first_events']):,} events committed; CPU {r['first_cpu'] / r['floor_cpu']:.1f}x "
          "the floor's)")
    print(f"  steady sweep                {r['steady']:.2f} s   ratio {ratio:.2f}x  "
          f"(target <= {TARGET:g}x)")
    ok = ratio <= TARGET
    print(f"  {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
