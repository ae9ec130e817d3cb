"""Requests per cycle, per source, counted by the simulators (issue: Aether365 and Ayliea sources).

Targets:
- with nothing changed upstream, a cycle costs O(1) requests per scope: the same small number
  whatever N is (ScanOrbit and Aether365 probe their scan lists, Ayliea its scores; Aether365
  also reads its two snapshots, threats and policies). ScanOrbit and Ayliea also re-read
  everything every cycle while that costs at most `resweep_budget_share` of the requests
  their rate limit allows (bridge/sources/freshness.py), so with the unlimited rate the
  simulators run at here, they always would: the idle cycle is measured with that share at 0,
  the cost a rate-limited organisation's large list pays;
- a full sweep of N items costs ceil(N / max page size) + O(1) (ScanOrbit's O(1) is its scan
  probe and its `GET /accounts`). Ayliea's list has no total, so its pages overlap by one row
  to notice a list shifting under us: ceil((N - 1) / 99) pages, plus the short page that ends
  the list — at most one more request per 9,900 items.

    python bench/bench_requests.py        (or: python bench/run.py requests)
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import scratch_dir  # noqa: E402
from bridge.config import parse_config  # noqa: E402
from bridge.health import Health  # noqa: E402
from bridge.logging import LogConfig, configure_logging  # noqa: E402
from bridge.pipeline import Pipeline  # noqa: E402
from bridge.sim.aether365 import Aether365World  # noqa: E402
from bridge.sim.aether365 import make_app as make_aether365_app  # noqa: E402
from bridge.sim.ayliea import SCOPES, AylieaWorld  # noqa: E402
from bridge.sim.ayliea import make_app as make_ayliea_app  # noqa: E402
from bridge.sim.common import RunningSim, SimWorld  # noqa: E402
from bridge.sim.scanorbit import ScanOrbitWorld  # noqa: E402
from bridge.sim.scanorbit import make_app as make_scanorbit_app  # noqa: E402
from bridge.store.sqlite import SQLiteStore  # noqa: E402

SIZES = (1_000, 10_000)
SO_KEY = "sk_live_" + "0123456789abcdef" * 4  # fake sim key
AE_KEY = "ae_live_fake_sim_bench_" + "0123456789abcdef"  # fake sim key
AY_KEY = "ayliea_pk_fake_sim_bench_" + "0123456789abcdef"  # fake sim key
UNLIMITED = {"rate_limit_per_minute": 10**7, "burst": 10**6}
IDLE_BUDGET = 3  # requests per scope per idle cycle, whatever N


def offset_pages(n: int, limit: int = 100, overlap: int = 1) -> int:
    """Requests for an overlapping offset walk: stop at the first page shorter than `limit`."""
    if n < limit:
        return 1
    return (n - limit) // (limit - overlap) + 2


@dataclass
class Vendor:
    name: str
    page: int  # the vendor's maximum page size
    constant: int  # the O(1) part of a full sweep
    build: Callable[[int], tuple[SimWorld, Any]]  # N -> (world, app)
    source: Callable[[str], dict[str, Any]]  # url -> source config
    expected_full: Callable[[int], int]


def _scanorbit(n: int) -> tuple[SimWorld, Any]:
    world = ScanOrbitWorld(api_keys={SO_KEY}, seed=5, rate_limit=10**9)
    world.bulk_add(n)
    world.complete_scan()
    return world, make_scanorbit_app(world)


def _aether365(n: int) -> tuple[SimWorld, Any]:
    world = Aether365World(tokens={AE_KEY: "tenant-bench"}, seed=5, rate_limit=10**9)
    for i in range(n):
        world.set_test("tenant-bench", f"AE.{i:06d}", "failed")
    world.run_scan("tenant-bench")
    world.add_risky_user("tenant-bench")
    world.add_alert("tenant-bench")
    world.default_policies("tenant-bench")
    return world, make_aether365_app(world)


def _ayliea(n: int) -> tuple[SimWorld, Any]:
    world = AylieaWorld(keys={AY_KEY: SCOPES}, seed=5, rate_limit=10**9)
    for _ in range(n):
        world.add_recommendation()
    world.set_score("ai-security", 72)
    return world, make_ayliea_app(world)


VENDORS = (
    Vendor("scanorbit", 100, 2, _scanorbit,
           lambda url: {"type": "scanorbit", "api_key": SO_KEY, "base_url": url,
                        "resweep_budget_share": 0},
           lambda n: 2 + math.ceil(n / 100)),
    Vendor("aether365", 200, 3, _aether365,
           lambda url: {"type": "aether365", "base_url": url,
                        "tenants": [{"name": "bench", "api_key": AE_KEY}]},
           lambda n: 3 + math.ceil(n / 200)),
    Vendor("ayliea", 100, 2, _ayliea,
           lambda url: {"type": "ayliea", "api_key": AY_KEY, "base_url": url,
                        "resweep_budget_share": 0},
           lambda n: 1 + offset_pages(n)),
)


async def measure(vendor: Vendor, n: int) -> tuple[int, int, int]:
    """(requests of the first, full sweep; of an idle cycle; as the sweep record counted)."""
    tmp = scratch_dir("bridge-bench-requests-")
    world, app = vendor.build(n)
    async with RunningSim(app) as sim:
        config = parse_config({
            "state": {"path": str(tmp / "bridge.db")},
            "admin": {"enabled": False},
            "log": {"level": "warning"},
            "sources": [{"name": vendor.name, "jitter": 0, "http": UNLIMITED,
                         **vendor.source(sim.url)}],
            "sinks": [{"name": "sink", "type": "file", "path": str(tmp / "events.jsonl")}],
            "routes": {"sinks": ["sink"]},
        })
        store = SQLiteStore(config.state.path)
        await store.open()
        pipeline = Pipeline.build(config, store, Health())
        source = pipeline.sources[vendor.name]
        try:
            before = world.stats.requests_total
            full = await pipeline.sweep(source, source.scopes[0])
            assert full is not None and full.record.outcome == "complete", full
            full_requests = world.stats.requests_total - before
            before = world.stats.requests_total
            idle = await pipeline.sweep(source, source.scopes[0])
            assert idle is not None and idle.record.events == 0, idle
            idle_requests = world.stats.requests_total - before
        finally:
            await pipeline.stop(1.0)
            await store.close()
    return full_requests, idle_requests, full.record.requests


def main() -> int:
    configure_logging(LogConfig(level="warning"))
    ok = True
    print("requests: counted by the simulators, in-process, one scope per source")
    print(f"  {'source':<10} {'N':>7}  {'full sweep':>10}  {'expected':>8}  "
          f"{'ceil(N/page)+c':>14}  {'idle cycle':>10}")
    for vendor in VENDORS:
        idle_seen = set()
        for n in SIZES:
            full, idle, recorded = asyncio.run(measure(vendor, n))
            naive = math.ceil(n / vendor.page) + vendor.constant
            expected = vendor.expected_full(n)
            idle_seen.add(idle)
            good = full == expected == recorded and full <= naive + 1 and idle <= IDLE_BUDGET
            ok = ok and good
            print(f"  {vendor.name:<10} {n:>7}  {full:>10}  {expected:>8}  "
                  f"{naive:>11} (+{vendor.constant})  {idle:>10}  {'' if good else 'MISS'}")
        if len(idle_seen) != 1:  # an idle cycle must not grow with N
            ok = False
            print(f"  {vendor.name}: idle cost depends on N: {sorted(idle_seen)}  MISS")
    print(f"  targets: full sweep = ceil(N / page) + O(1) (Ayliea: +1 per 9,900 for its "
          f"overlap); idle cycle <= {IDLE_BUDGET} and the same for every N")
    print(f"  {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
