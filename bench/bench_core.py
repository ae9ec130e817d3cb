"""Core benchmark (issue: the daemon's core).

Targets on a 2-core machine, with the ScanOrbit simulator in its own process serving 100,000
findings (1,000 pages of 100):
- a steady-state sweep (nothing changed) costs at most 2x fetching and JSON-decoding the same
  pages alone;
- the first sweep of 100,000 new findings, events committed to the outbox, takes <= 10 s of
  bridge CPU time;
- peak RSS <= 200 MB.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sim_server import BENCH_FAKE_SIM_KEY  # noqa: E402
from bridge.config import parse_config  # noqa: E402
from bridge.health import Health  # noqa: E402
from bridge.pipeline import Pipeline  # noqa: E402
from bridge.store.sqlite import SQLiteStore  # noqa: E402

FINDINGS = 100_000
PAGE = 100


async def fetch_and_decode(url: str) -> float:
    """The floor: every page fetched and decoded, nothing else."""
    headers = {"X-API-Key": BENCH_FAKE_SIM_KEY}
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        pages = FINDINGS // PAGE
        for page in range(1, pages + 1):
            async with session.get(f"{url}/findings", params={"page": page, "limit": PAGE},
                                   headers=headers) as resp:
                orjson.loads(await resp.read())  # the decoder bridge itself uses
    return time.perf_counter() - start


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(url: str) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    config = parse_config({
        "state": {"path": str(tmp / "bridge.db")},
        "admin": {"enabled": False},
        "log": {"level": "warning"},
        "sources": [{"name": "scanorbit", "type": "scanorbit", "base_url": url,
                     "api_key": BENCH_FAKE_SIM_KEY, "full_resweep_interval": 0,
                     "http": {"rate_limit_per_minute": 10**7, "burst": 10**6}}],
        "sinks": [{"name": "siem", "type": "file", "path": str(tmp / "events.jsonl")}],
        "routes": {"sinks": ["siem"]},
    })
    store = SQLiteStore(config.state.path)
    await store.open()
    pipeline = Pipeline.build(config, store, Health())
    source = pipeline.sources["scanorbit"]
    out: dict[str, float] = {}

    await fetch_and_decode(url)  # warm the simulator's caches
    cpu0, wall0 = time.process_time(), time.perf_counter()
    first = await pipeline.sweep(source, "scanorbit")
    out["first_cpu"] = time.process_time() - cpu0
    out["first_wall"] = time.perf_counter() - wall0
    assert first is not None and first.record.outcome == "complete", first
    out["first_events"] = first.record.events

    baselines, steadies = [], []
    for _ in range(3):
        baselines.append(await fetch_and_decode(url))
        t0 = time.perf_counter()
        steady = await pipeline.sweep(source, "scanorbit")
        steadies.append(time.perf_counter() - t0)
        assert steady is not None and steady.events == () and steady.record.outcome == "complete"
    out["baseline"] = min(baselines)
    out["steady"] = min(steadies)
    out["rss_mb"] = rss_mb()
    await pipeline.stop(1)
    await store.close()
    return out


def main() -> int:
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sim_server.py"), "scanorbit",
                               "--findings", str(FINDINGS)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        r = asyncio.run(run(url))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)
    ratio = r["steady"] / r["baseline"]
    print("core: ScanOrbit 100,000 findings (1,000 pages), simulator in another process")
    print(f"  fetch+decode baseline   {r['baseline']:.2f} s")
    print(f"  steady-state sweep      {r['steady']:.2f} s   ratio {ratio:.2f}x  (target <= 2.0x)")
    print(f"  first sweep             {r['first_cpu']:.2f} s CPU, {r['first_wall']:.2f} s wall, "
          f"{int(r['first_events'])} events committed  (target <= 10 s CPU)")
    print(f"  peak RSS                {r['rss_mb']:.0f} MB  (target <= 200 MB)")
    ok = ratio <= 2.0 and r["first_cpu"] <= 10 and r["rss_mb"] <= 200
    print(f"  {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
