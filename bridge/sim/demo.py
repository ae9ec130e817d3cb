"""Seeded worlds and a driver that keeps changing them, for `bridge demo`.

The credentials are deterministic and obviously fake so the demo config can name them and the
repository's secret scan (which skips lines saying fake/sim) stays quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from bridge.sim.aether365 import Aether365World
from bridge.sim.ayliea import SCOPES, AylieaWorld
from bridge.sim.common import SimWorld
from bridge.sim.scanorbit import ScanOrbitWorld

log = structlog.get_logger(__name__)

_HEX = "0123456789abcdef"
SCANORBIT_FAKE_SIM_KEY = "sk_live_" + _HEX * 4  # fake sim key: sk_live_ + 64 hex chars
AETHER365_FAKE_SIM_TOKENS = {  # fake sim tokens, one per tenant
    "ae_live_fake_sim_contoso_" + _HEX * 2: "tenant-contoso",
    "ae_live_fake_sim_fabrikam_" + _HEX * 2: "tenant-fabrikam",
}
AYLIEA_FAKE_SIM_KEY = "ayliea_pk_fake_sim_" + _HEX * 2  # fake sim key


@dataclass
class DemoWorlds:
    """The three seeded worlds and the credentials that reach them."""

    scanorbit: ScanOrbitWorld
    aether365: Aether365World
    ayliea: AylieaWorld
    scanorbit_key: str = SCANORBIT_FAKE_SIM_KEY
    aether365_tokens: dict[str, str] = field(
        default_factory=lambda: dict(AETHER365_FAKE_SIM_TOKENS))
    ayliea_key: str = AYLIEA_FAKE_SIM_KEY

    @property
    def all(self) -> tuple[SimWorld, ...]:
        return (self.scanorbit, self.aether365, self.ayliea)


def seed_demo_worlds(seed: int = 7) -> DemoWorlds:
    """Small, varied worlds: enough for every event type to show up within a few minutes."""
    scanorbit = ScanOrbitWorld(api_keys={SCANORBIT_FAKE_SIM_KEY}, seed=seed,
                               org_name="Demo Corp")
    scanorbit.add_finding(severity="critical")
    for _ in range(11):
        scanorbit.add_finding()
    for finding_id in sorted(scanorbit.findings)[:2]:
        scanorbit.resolve(finding_id)
    scanorbit.complete_scan(findings_new=12, findings_resolved=2)

    aether = Aether365World(tokens=AETHER365_FAKE_SIM_TOKENS, seed=seed + 1)
    for tenant_id, name in (("tenant-contoso", "Contoso"), ("tenant-fabrikam", "Fabrikam")):
        aether.tenants[tenant_id].name = name
        aether.populate(tenant_id, tests=30, failing=10)
        aether.run_scan(tenant_id)
        aether.add_risky_user(tenant_id, risk_level="high")
        aether.add_risky_user(tenant_id, risk_level="medium")
        aether.add_risk_detection(tenant_id)
        aether.add_alert(tenant_id, severity="high")
        aether.add_alert(tenant_id, title="Unusual sign-in volume", severity="low",
                         category="InitialAccess")
        aether.default_policies(tenant_id)

    ayliea = AylieaWorld(keys={AYLIEA_FAKE_SIM_KEY: SCOPES}, seed=seed + 2)
    for _ in range(8):
        ayliea.add_recommendation()
    for framework, score in (("ai-security", 72), ("nist-ai-rmf", 64), ("iso-42001", 85)):
        ayliea.set_score(framework, score)
    ayliea.add_platform("ChatGPT")
    ayliea.add_platform("Microsoft Copilot")
    return DemoWorlds(scanorbit=scanorbit, aether365=aether, ayliea=ayliea)


async def drive(
    worlds: DemoWorlds | Sequence[SimWorld],
    rng: random.Random,
    stop: asyncio.Event,
    period: float,
    on_step: Callable[[str], None] | None = None,
) -> None:
    """Every `period` seconds, one random realistic change in one world, until `stop` is set.

    Waits first, so the daemon's first sweep sees the seeded state before anything changes.
    """
    targets = worlds.all if isinstance(worlds, DemoWorlds) else tuple(worlds)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)
        if stop.is_set() or not targets:
            return
        note = rng.choice(targets).random_step(rng)
        log.info("sim_world_changed", change=note)
        if on_step is not None:
            on_step(note)
