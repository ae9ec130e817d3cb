"""`bridge demo`: the whole flow on one machine, no accounts needed.

Starts the bundled vendor simulators, runs the daemon against them on `demo.yaml` with SQLite in
a temporary (or given) directory, and keeps changing the simulated world so new, changed,
resolved and reopened events show up within a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path

import yaml

from bridge.config import parse_config
from bridge.daemon import Daemon
from bridge.logging import configure_logging
from bridge.sim.aether365 import make_app as make_aether365_app
from bridge.sim.ayliea import make_app as make_ayliea_app
from bridge.sim.common import RunningSim
from bridge.sim.demo import DemoWorlds, drive, seed_demo_worlds
from bridge.sim.scanorbit import make_app as make_scanorbit_app
from bridge.textsafe import printable


def demo_yaml() -> str:
    return resources.files("bridge").joinpath("demo.yaml").read_text(encoding="utf-8")


async def run_demo(state_dir: Path | None = None, duration: float | None = None,
                   interval: float = 5.0, seed: int = 7) -> int:
    """Run until Ctrl-C (or `duration` seconds); returns the daemon's exit code."""
    tmp = None
    if state_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bridge-demo-")
        state_dir = Path(tmp.name)
    state_dir.mkdir(parents=True, exist_ok=True)
    worlds = seed_demo_worlds(seed)
    async with contextlib.AsyncExitStack() as stack:
        scanorbit = await stack.enter_async_context(RunningSim(make_scanorbit_app(worlds.scanorbit)))
        aether365 = await stack.enter_async_context(RunningSim(make_aether365_app(worlds.aether365)))
        ayliea = await stack.enter_async_context(RunningSim(make_ayliea_app(worlds.ayliea)))
        env = {
            "BRIDGE_DEMO_STATE_DIR": str(state_dir),
            "BRIDGE_DEMO_INTERVAL": str(interval),
            "BRIDGE_DEMO_SCANORBIT_URL": scanorbit.url,
            "BRIDGE_DEMO_SCANORBIT_KEY": worlds.scanorbit_key,
            "BRIDGE_DEMO_AETHER365_URL": aether365.url,
            **_tenant_keys(worlds),
            "BRIDGE_DEMO_AYLIEA_URL": ayliea.url,
            "BRIDGE_DEMO_AYLIEA_KEY": worlds.ayliea_key,
        }
        config = parse_config(yaml.safe_load(demo_yaml()), "demo.yaml", env)
        configure_logging(config.log)
        daemon = Daemon(config, grace=5.0)
        ready = asyncio.Event()
        stop_driver = asyncio.Event()
        print(f"bridge demo: simulators up (ScanOrbit {scanorbit.url}, Aether365 "
              f"{aether365.url}, Ayliea {ayliea.url}); state in {state_dir}")
        print(f"bridge demo: sweeping every {interval:g}s; the simulated world changes every "
              f"{interval * 0.6:g}s. Ctrl-C to stop.\n", flush=True)
        driver = asyncio.create_task(drive(worlds, random.Random(seed), stop_driver,
                                           interval * 0.6))
        timer = None
        if duration is not None:
            timer = asyncio.get_running_loop().call_later(duration, daemon.request_stop)
        runner = asyncio.create_task(daemon.run(ready=ready))
        with contextlib.suppress(asyncio.CancelledError):
            await ready.wait()
            if daemon.admin is not None:
                print(f"bridge demo: metrics at http://127.0.0.1:{daemon.admin.port}/metrics\n",
                      flush=True)
        code = await runner
        stop_driver.set()
        await driver
        if timer is not None:
            timer.cancel()
    summarize(state_dir / "events.jsonl")
    if tmp is not None:
        tmp.cleanup()
    return code


def _tenant_keys(worlds: DemoWorlds) -> dict[str, str]:
    """BRIDGE_DEMO_AETHER365_<TENANT>_KEY for each seeded tenant ("tenant-contoso" -> CONTOSO)."""
    return {f"BRIDGE_DEMO_AETHER365_{tenant.removeprefix('tenant-').upper()}_KEY": token
            for token, tenant in worlds.aether365_tokens.items()}


def summarize(path: Path) -> None:
    """Counts per event type and vendor from the demo's JSON-lines file.

    Lines are split on LF only, as the file sink writes them: `splitlines()` would also break
    inside a JSON string at U+2028 or NEL (which files from older versions hold raw). A line
    that is not a JSON object is counted, not fatal, and every word shown is made `printable`.
    """
    if not path.exists():
        print("\nbridge demo: no events were written", file=sys.stderr)
        return
    types: Counter[str] = Counter()
    vendors: Counter[str] = Counter()
    unreadable = 0
    with path.open("rb") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                event = None
            if not isinstance(event, dict):
                unreadable += 1
                continue
            types[str(event.get("type"))] += 1
            vendors[str(event.get("vendor"))] += 1
    parts = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
    sources = ", ".join(f"{n} {v}" for v, n in sorted(vendors.items()))
    skipped = f"; {unreadable} unreadable line(s) skipped" if unreadable else ""
    print()
    print(printable(f"bridge demo: {types.total()} events ({parts}; from {sources}){skipped}; "
                    f"written to {path}"))
