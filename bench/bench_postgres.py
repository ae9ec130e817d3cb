"""PostgreSQL beside SQLite (issue 22), measured in one run so the ratios hold on any machine:

- a 100,000-finding first sweep (committed and delivered to a file sink) and a steady-state
  sweep (nothing changed), with each store; target: PostgreSQL <= 2x SQLite for both;
- outbox delivery to the file sink, events/s, with each store (50,000 queued events drained);
- failover with 3 real `bridge run` replicas: the sink's owner is SIGKILLed; how long until its
  units are owned again, and until an event the vendor produced after the kill is delivered.

The ScanOrbit simulator serves the findings from its own process; each store's run is a
fresh process (bench_core's setup). PostgreSQL: `BRIDGE_BENCH_PG_DSN` (default the local test
server), a schema of its own, dropped afterwards.

    python bench/bench_postgres.py                  (or: --findings 20000 on a slow machine)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_core import fetch_and_decode, simulator  # noqa: E402
from bench.harness import scratch_dir  # noqa: E402
from bench.sim_server import BENCH_FAKE_SIM_KEY  # noqa: E402

PG_DSN = os.environ.get("BRIDGE_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
VS_SQLITE = 2.0  # PostgreSQL's sweep times / SQLite's
QUEUED = 50_000  # events drained for the delivery rate
STEADY_RUNS = 3
FAILOVER_LEASE = 5.0


def state_config(backend: str, tmp: Path, schema: str) -> dict[str, Any]:
    if backend == "sqlite":
        return {"backend": "sqlite", "path": str(tmp / "bridge.db")}
    return {"backend": "postgres", "dsn": PG_DSN, "schema": schema}


async def store_run(url: str, findings: int, backend: str, schema: str) -> dict[str, float]:
    """One store, in this process: first sweep delivered, steady sweeps, then the outbox
    drained to a file sink."""
    from bridge.config import parse_config
    from bridge.health import Health
    from bridge.logging import LogConfig, configure_logging
    from bridge.model import Event, EventType, event_id
    from bridge.pipeline import Pipeline

    configure_logging(LogConfig(level="warning"))
    tmp = scratch_dir("bridge-bench-pg-")
    events_file = tmp / "events.jsonl"
    config = parse_config({
        "state": state_config(backend, tmp, schema),
        "admin": {"enabled": False}, "log": {"level": "warning"},
        "sources": [{"name": "scanorbit", "type": "scanorbit", "base_url": url,
                     "api_key": BENCH_FAKE_SIM_KEY, "full_resweep_interval": 0,
                     "http": {"rate_limit_per_minute": 10**7, "burst": 10**6}}],
        "sinks": [{"name": "siem", "type": "file", "path": str(events_file)}],
        "routes": {"sinks": ["siem"]},
    })
    store = config.state.build()
    await store.open()
    pipeline = Pipeline.build(config, store, Health())
    source = pipeline.sources["scanorbit"]
    out: dict[str, float] = {}
    await fetch_and_decode(url, findings)  # warm the simulator's caches

    stop = asyncio.Event()
    wall0 = time.perf_counter()
    workers = [asyncio.create_task(w.run(stop)) for w in pipeline.workers.values()]
    first = await pipeline.sweep(source, "scanorbit")
    stop.set()
    await asyncio.gather(*workers)
    left = await pipeline.drain(900)
    out["first"] = time.perf_counter() - wall0
    assert first is not None and first.record.outcome == "complete", first
    assert left == {"siem": 0}, left
    out["first_events"] = first.record.events

    steadies = []
    for _ in range(STEADY_RUNS):
        t0 = time.perf_counter()
        steady = await pipeline.sweep(source, "scanorbit")
        steadies.append(time.perf_counter() - t0)
        assert steady is not None and steady.record.events == 0, steady
    out["steady"] = min(steadies)

    # Delivery alone: QUEUED events committed to the outbox, then drained to the file.
    events_file.unlink()
    now = first.record.finished_at
    queued = [Event(id=event_id("bench", "finding", f"q{i}", EventType.NEW, 1),
                    type=EventType.NEW, source="scanorbit", vendor="scanorbit", scope="bench",
                    kind="finding", key=f"q{i}", title=f"queued finding {i}", severity="high",
                    occurred_at=now, counter=1) for i in range(QUEUED)]
    for i in range(0, QUEUED, 5_000):
        await store.commit_chunk("bench", [], [(e, ["siem"]) for e in queued[i:i + 5_000]])
    t0 = time.perf_counter()
    left = await pipeline.drain(900)
    out["delivery_rate"] = QUEUED / (time.perf_counter() - t0)
    assert left == {"siem": 0}, left
    await pipeline.stop(1)
    await store.close()
    return out


def run_store(url: str, findings: int, backend: str, schema: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--store", backend, "--url", url,
                           "--findings", str(findings), "--schema", schema],
                          capture_output=True, text=True, timeout=3600)
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"{backend} run failed ({done.returncode})")
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


async def failover(schema: str) -> dict[str, float]:
    """3 replicas, 3 scopes and a sink; SIGKILL the sink's owner; seconds until its units
    are owned again, and until a finding added after the kill reaches the file."""
    from bridge.logging import LogConfig, configure_logging
    from bridge.sim.common import RunningSim
    from bridge.sim.scanorbit import ScanOrbitWorld, make_app
    from bridge.store.postgres.leases import lease_rows
    from bridge.store.postgres.store import PostgresStore

    configure_logging(LogConfig(level="warning"))
    tmp = scratch_dir("bridge-bench-failover-")
    worlds = [ScanOrbitWorld(api_keys={BENCH_FAKE_SIM_KEY}, seed=i, rate_limit=10**6)
              for i in range(3)]
    sims = [RunningSim(make_app(w), shutdown_timeout=0.2) for w in worlds]
    for sim in sims:
        await sim.start()
    for world in worlds:
        for _ in range(20):
            world.add_finding()
    events = tmp / "events.jsonl"
    procs = []
    for n in range(3):
        config = {
            "state": {"backend": "postgres", "dsn": PG_DSN, "schema": schema,
                      "lease": FAILOVER_LEASE, "replica_id": f"r{n}"},
            "admin": {"enabled": False}, "log": {"level": "warning", "format": "json"},
            "sources": [{"name": f"so-{i}", "type": "scanorbit", "base_url": sim.url,
                         "api_key": BENCH_FAKE_SIM_KEY, "interval": 1, "jitter": 0,
                         "full_resweep_interval": 0} for i, sim in enumerate(sims)],
            "sinks": [{"name": "events", "type": "file", "path": str(events)}],
            "routes": {"sinks": ["events"]},
        }
        path = tmp / f"r{n}.yaml"
        path.write_text(json.dumps(config))
        procs.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=tmp))
    probe = PostgresStore(PG_DSN, schema=schema)
    await probe.open()

    async def owners() -> dict[str, str]:
        return {r.unit: r.owner for r in await lease_rows(probe)
                if r.owner and r.expires_in and r.expires_in > 0}

    async def until(check: Any, timeout: float = 120) -> float:
        t0 = time.monotonic()
        while not await check():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("failover did not complete")
            await asyncio.sleep(0.05)
        return time.monotonic() - t0

    def delivered() -> list[str]:
        return events.read_text().splitlines() if events.exists() else []

    try:
        async def settled() -> bool:
            found = await owners()
            return len(delivered()) >= 60 and len(found) == 4 and len(set(found.values())) >= 2

        await until(settled)
        victim = int((await owners())["sink:events"].removeprefix("r"))
        added = worlds[0].add_finding()["id"]
        procs[victim].send_signal(signal.SIGKILL)
        t0 = time.monotonic()

        async def owned_again() -> bool:
            found = await owners()
            return len(found) == 4 and f"r{victim}" not in found.values()

        async def reached() -> bool:
            return any(added in line for line in delivered())

        owned = await until(owned_again)
        await until(reached)
        return {"owned_again": owned, "delivered_after": time.monotonic() - t0}
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 60)
        await probe.close()
        for sim in sims:
            await sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    parser.add_argument("--no-failover", action="store_true")
    args = parser.parse_args(argv if argv is not None else [])
    if args.store:
        print(json.dumps(asyncio.run(store_run(args.url, args.findings, args.store,
                                               args.schema))))
        return 0
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    results: dict[str, dict[str, float]] = {}
    print(f"postgres: {args.findings:,} ScanOrbit findings, simulator and each store in its own "
          f"process; {STEADY_RUNS} steady sweeps (min); {QUEUED:,} events drained to a file")
    try:
        for backend in ("sqlite", "postgres"):
            with simulator(args.findings) as url:
                results[backend] = run_store(url, args.findings, backend, schema)
        fo = None if args.no_failover else asyncio.run(failover(schema + "_fo"))
    finally:
        asyncio.run(_drop(schema, schema + "_fo"))
    ok = True
    for backend, r in results.items():
        print(f"  {backend:<9} first sweep {r['first']:7.2f} s ({int(r['first_events']):,} "
              f"events delivered)  steady {r['steady']:6.2f} s  delivery "
              f"{r['delivery_rate']:8,.0f} events/s")
    for name in ("first", "steady"):
        ratio = results["postgres"][name] / results["sqlite"][name]
        good = ratio <= VS_SQLITE
        ok = ok and good
        print(f"  postgres/sqlite {name:<7} {ratio:5.2f}  (target <= {VS_SQLITE:g})  "
              f"{'ok' if good else 'MISS'}")
    if fo is not None:
        print(f"  failover (3 replicas, lease {FAILOVER_LEASE:g} s): units owned again after "
              f"{fo['owned_again']:.1f} s, a new finding delivered {fo['delivered_after']:.1f} s "
              "after the SIGKILL")
    print(f"  {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


async def _drop(*schemas: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
