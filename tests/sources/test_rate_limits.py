"""Whole sweeps of every scope at once never exceed a vendor's per-key limit: the simulators
enforce a (scaled-down) limit and count every 429, and a 429 the client should have avoided
fails the test (see the `aether365`/`ayliea` fixtures)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.config import parse_config
from bridge.sim.aether365 import Aether365World
from bridge.sim.aether365 import make_app as make_aether365_app
from bridge.sim.ayliea import SCOPES, AylieaWorld
from bridge.sim.ayliea import make_app as make_ayliea_app
from bridge.sim.common import RunningSim
from tests.conftest import (
    SIM_AETHER365_KEYS,
    SIM_AYLIEA_KEY,
    aether365_source,
    avoidable_429s,
    ayliea_source,
    base_config,
)
from tests.support.harness import Harness

# 12 per second per key upstream; 10 per second (burst 1) configured: 11 at most in any second.
UNDER = {"rate_limit_per_minute": 600, "burst": 1, "max_retries": 0, "timeout": 5}


async def test_concurrent_sweeps_of_every_scope_stay_under_each_keys_limit(
    tmp_path: Path,
) -> None:
    aether = Aether365World(tokens={k: f"tenant-{n}" for n, k in SIM_AETHER365_KEYS.items()},
                            rate_limit=12, rate_window=1.0)
    ayliea = AylieaWorld(keys={SIM_AYLIEA_KEY: SCOPES}, rate_limit=12, rate_window=1.0)
    for tenant in aether.tenants:
        aether.populate(tenant, tests=500, failing=100)
        aether.run_scan(tenant)
        aether.add_alert(tenant)
        aether.default_policies(tenant)
    for _ in range(250):
        ayliea.add_recommendation()
    ayliea.set_score("ai-security", 70)
    async with RunningSim(make_aether365_app(aether)) as a_sim, \
            RunningSim(make_ayliea_app(ayliea)) as y_sim:
        cfg = parse_config(base_config(tmp_path, [
            aether365_source(a_sim.url, tenants=("contoso", "fabrikam"), http=UNDER),
            ayliea_source(y_sim.url, http=UNDER),
        ]))
        async with Harness(cfg) as h:

            async def tenant_sweeps(name: str) -> list[str]:
                outcomes = []
                for _ in range(3):
                    result = await h.sweep(f"aether365/{name}", source="aether365")
                    outcomes.append(result.record.outcome)
                    aether.run_scan(f"tenant-{name}")  # the next sweep pages a new scan
                return outcomes

            async def ayliea_sweeps() -> list[str]:
                return [(await h.sweep(source="ayliea")).record.outcome for _ in range(3)]

            results = await asyncio.gather(tenant_sweeps("contoso"), tenant_sweeps("fabrikam"),
                                           ayliea_sweeps())
    assert results == [["complete"] * 3] * 3
    assert avoidable_429s(aether) == [] and avoidable_429s(ayliea) == []
    # Three full sweeps of 6 requests per tenant, and of 4 for Ayliea: every one was paced.
    assert aether.stats.requests_total == 36 and ayliea.stats.requests_total == 12
