"""Demo worlds: seeded content reachable with the fake keys, and a driver that stops on time."""

from __future__ import annotations

import asyncio
import random
import re

import aiohttp

from bridge.sim import (
    RunningSim,
    drive,
    make_aether365_app,
    make_ayliea_app,
    make_scanorbit_app,
    seed_demo_worlds,
)


def test_seeded_worlds_have_the_promised_content() -> None:
    demo = seed_demo_worlds()
    assert re.fullmatch(r"sk_live_[0-9a-f]{64}", demo.scanorbit_key)
    assert len(demo.scanorbit.findings) == 12
    assert any(f["severity"] == "critical" for f in demo.scanorbit.findings.values())
    assert len(demo.scanorbit.scans_recent) == 1
    assert len(demo.aether365.tenants) == 2 == len(set(demo.aether365_tokens.values()))
    for tenant in demo.aether365.tenants.values():
        assert sum(t["result"] == "failed" for t in tenant.tests.values()) == 10
        assert demo.aether365.latest_completed(tenant.id) is not None
        assert tenant.threats["riskyUsers"] and tenant.policies
    assert len(demo.ayliea.recommendations) == 8 and len(demo.ayliea.scores) == 3
    again = seed_demo_worlds()
    assert sorted(again.scanorbit.findings) == sorted(demo.scanorbit.findings)  # deterministic


async def test_demo_keys_reach_the_simulators() -> None:
    demo = seed_demo_worlds()
    token = next(iter(demo.aether365_tokens))
    async with RunningSim(make_scanorbit_app(demo.scanorbit)) as so, \
            RunningSim(make_aether365_app(demo.aether365)) as ae, \
            RunningSim(make_ayliea_app(demo.ayliea)) as ay, aiohttp.ClientSession() as s:
        for url, headers in (
            (so.url + "/findings", {"X-API-Key": demo.scanorbit_key}),
            (ae.url + "/tenants/me/threats", {"Authorization": f"Bearer {token}"}),
            (ay.url + "/recommendations", {"X-API-Key": demo.ayliea_key}),
        ):
            async with s.get(url, headers=headers) as resp:
                assert resp.status == 200, url


async def test_drive_mutates_until_stopped() -> None:
    demo = seed_demo_worlds()
    stop = asyncio.Event()
    notes: list[str] = []

    def record(note: str) -> None:
        notes.append(note)
        if len(notes) == 15:
            stop.set()

    await asyncio.wait_for(drive(demo, random.Random(3), stop, 0.01, record), 5.0)
    assert len(notes) == 15  # nothing changes after stop is set
    vendors = {note.split()[0] for note in notes}
    assert vendors == {"scanorbit", "aether365", "ayliea"}
    assert len(demo.scanorbit.scans_recent) > 1 or "scanorbit" not in vendors
