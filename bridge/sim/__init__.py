"""Vendor simulators: one aiohttp app per vendor over a scriptable world, with fault injection.

Used by `bridge demo`, integration and chaos tests and benchmarks. Typical use::

    world = ScanOrbitWorld(api_keys={"sk_live_fake"})
    world.bulk_add(1000)
    async with RunningSim(make_scanorbit_app(world)) as sim:
        ...  # point a source at sim.url
"""

from bridge.sim.aether365 import Aether365World, Tenant
from bridge.sim.aether365 import make_app as make_aether365_app
from bridge.sim.ayliea import AylieaWorld
from bridge.sim.ayliea import make_app as make_ayliea_app
from bridge.sim.common import RateLimitWindow, RunningSim, SimStats, SimWorld
from bridge.sim.demo import DemoWorlds, drive, seed_demo_worlds
from bridge.sim.faults import Fault, FaultPlan
from bridge.sim.scanorbit import ScanOrbitWorld
from bridge.sim.scanorbit import make_app as make_scanorbit_app

__all__ = [
    "Aether365World",
    "AylieaWorld",
    "DemoWorlds",
    "Fault",
    "FaultPlan",
    "RateLimitWindow",
    "RunningSim",
    "ScanOrbitWorld",
    "SimStats",
    "SimWorld",
    "Tenant",
    "drive",
    "make_aether365_app",
    "make_ayliea_app",
    "make_scanorbit_app",
    "seed_demo_worlds",
]
