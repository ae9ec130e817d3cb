"""Signals at any moment against the real `bridge run` process.

A SIGHUP right after a (re)start (systemd's `ExecReload`, a config tool) is held from the
command's first instruction and becomes a reload once the daemon runs; a SIGTERM during startup
ends it cleanly. A reload keeps the vendor rate-limit buckets of the scopes that survive it, so
reloads in a burst provoke no 429 from a rate-limited vendor, and a reload held up by a
rate-limited sweep says so at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import BridgeConfig, load_config
from bridge.health import Health
from bridge.pipeline import Pipeline
from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld, make_app
from bridge.store.sqlite import SQLiteStore
from tests.conftest import avoidable_429s, base_config, scanorbit_source
from tests.daemon.conftest import NotifySocket, StartDaemon, Vendor, daemon_config, random_secret
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_until

# Seconds after bridge's first instruction: at once, during imports, while starting, running.
OFFSETS = [0.0, 0.05, 0.3, 1.0]


def write_atomically(daemon: DaemonProcess, config: dict[str, Any]) -> None:
    """Replace the config file in one step: the daemon may be reading it right now."""
    staged = daemon.config_path.with_suffix(".staged")
    staged.write_text(yaml.safe_dump(config))
    os.replace(staged, daemon.config_path)


def catches(pid: int, sig: signal.Signals) -> bool:
    """Whether the process has a handler for `sig` installed right now (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    return bool(mask & (1 << (sig - 1)))


async def signal_at(daemon: DaemonProcess, sig: signal.Signals, offset: float) -> None:
    """Send `sig` `offset` seconds after bridge's first instruction ran (the moment its
    startup handler for `sig` shows in /proc), however long the interpreter took to get there.

    Before that instruction only the interpreter runs (20-60 ms here, much more on a busy
    machine) and the signal's default action applies, which no program can change; so the
    moments worth testing are counted from there, not from the spawn."""
    proc = daemon.proc
    assert proc is not None

    def exited() -> str | None:
        return None if proc.returncode is None else f"exited with {proc.returncode}"

    await wait_until(lambda: catches(proc.pid, sig), 60, "bridge's first instruction",
                     every=0.001, alive=exited)
    await asyncio.sleep(offset)  # the moment is the scenario: nothing is waited for here
    daemon.signal(sig)


Prepare = Callable[[DaemonProcess], None]


@pytest.fixture
async def signalled(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[DaemonProcess]]]:
    """`await signalled(config, sig, offset, prepare=None)`: a `bridge run` that got `sig`
    `offset` seconds after its first instruction ran."""
    spawned: list[DaemonProcess] = []

    async def start(config: dict[str, Any], sig: signal.Signals, offset: float,
                    prepare: Prepare | None = None) -> DaemonProcess:
        daemon = DaemonProcess(config, tmp_path)
        spawned.append(await daemon.start())
        if prepare is not None:
            prepare(daemon)
        await signal_at(daemon, sig, offset)
        return daemon

    yield start
    for daemon in spawned:
        await daemon.kill()


@pytest.mark.parametrize("offset", OFFSETS)
async def test_sighup_at_any_moment_after_start_reloads(
    tmp_path: Path, vendor: Vendor, signalled: Callable[..., Awaitable[DaemonProcess]],
    offset: float
) -> None:
    config = daemon_config(tmp_path, vendor)
    changed = {**config, "routes": {"sinks": ["events", "late"]}, "sinks": [
        *config["sinks"], {"name": "late", "type": "file", "path": str(tmp_path / "late.jsonl")}]}

    def new_file(daemon: DaemonProcess) -> None:  # what the SIGHUP is about
        write_atomically(daemon, changed)

    daemon = await signalled(config, signal.SIGHUP, offset, new_file)
    started = await daemon.wait_log("daemon_started", timeout=30)
    reloaded = await daemon.wait_log("config_reloaded", timeout=30)
    assert reloaded["sinks"] == ["events", "late"]
    held = [line for line in daemon.log_lines() if line["event"] == "signal_during_startup"]
    if held:  # arrived before the daemon's own handlers: queued, then done once running
        assert [(h["signal"], h["action"]) for h in held] == [("SIGHUP", "reload once running")]
    else:  # arrived after them: a reload of the running daemon
        assert offset >= 0.3 and started["sinks"] in (["events"], ["events", "late"])
    assert daemon.proc is not None and daemon.proc.returncode is None
    assert await daemon.stop() == 0, daemon.logs()


@pytest.mark.parametrize("offset", OFFSETS)
async def test_sigterm_at_any_moment_during_startup_exits_cleanly(
    tmp_path: Path, vendor: Vendor, signalled: Callable[..., Awaitable[DaemonProcess]],
    offset: float
) -> None:
    daemon = await signalled(daemon_config(tmp_path, vendor), signal.SIGTERM, offset)
    assert await daemon.wait(30) == 0, daemon.logs()
    logs = daemon.logs()
    assert "Traceback" not in logs, logs
    events = [line["event"] for line in daemon.log_lines()]
    if "signal_during_startup" in events or "stop_requested_during_startup" in events:
        assert "daemon_started" not in events  # nothing was started only to be stopped
    if events:
        assert events[-1] == "daemon_stopped", events


async def test_other_commands_get_a_held_signal_back(tmp_path: Path, vendor: Vendor) -> None:
    """Only the daemon takes held signals over: `bridge once` releases them, so a SIGHUP sent
    while it was still importing ends it, as a shell command should end."""
    once = DaemonProcess(daemon_config(tmp_path, vendor), tmp_path)
    once.proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "once", "--config", str(once.config_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await signal_at(once, signal.SIGHUP, 0.2)  # well before its imports are done
        assert await once.wait(30) == -signal.SIGHUP
        assert vendor.world.stats.requests_total == 0  # it never got to sweep
    finally:
        await once.kill()


# ---- rate limits across reloads ---------------------------------------------------------------

# The vendor admits 10 requests in any 2 s; the client is set to 3/s with a burst of 2, which
# stays within that (2 + 3 * 2 = 8) only while the bucket remembers what it spent.
VENDOR_LIMIT, VENDOR_WINDOW = 10, 2.0
CLIENT_HTTP = {"rate_limit_per_minute": 180, "burst": 2, "backoff_initial": 0.05,
               "backoff_max": 0.2, "max_retries": 5, "timeout": 5}


@pytest.fixture
async def limited_vendor() -> AsyncIterator[Vendor]:
    key = random_secret("sk_live_")
    world = ScanOrbitWorld(api_keys={key}, seed=5, rate_limit=VENDOR_LIMIT,
                           rate_window=VENDOR_WINDOW)
    for _ in range(60):
        world.add_finding()
    async with RunningSim(make_app(world), shutdown_timeout=0.2) as sim:
        yield Vendor(world, sim, key)


@pytest.mark.slow
async def test_reload_bursts_keep_the_rate_limit_buckets(
    tmp_path: Path, limited_vendor: Vendor, start_daemon: StartDaemon
) -> None:
    world = limited_vendor.world
    # Small pages, a sweep every second: the bucket is always being spent.
    config = daemon_config(tmp_path, limited_vendor, page_size=5, prefetch=2, http=CLIENT_HTTP)
    daemon = await start_daemon(config, grace=0.3)
    await daemon.wait_log("daemon_started")
    reloads = 25
    for n in range(reloads):
        mark = daemon.mark()
        config["sinks"][0]["batch_size"] = 10 + n  # a real change each time
        write_atomically(daemon, config)
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log("config_reloaded", since=mark, timeout=30)
    assert world.stats.requests_total > reloads  # every new pipeline swept at once
    assert await daemon.stop() == 0
    assert avoidable_429s(world) == [], daemon.logs()[-3000:]


@pytest.mark.slow
async def test_a_reload_waiting_for_a_rate_limited_sweep_says_so(
    tmp_path: Path, vendor: Vendor, start_daemon: StartDaemon, notify_socket: NotifySocket
) -> None:
    for _ in range(20):
        vendor.world.add_finding()
    # One request a second and 4 findings a page: the first sweep takes about six seconds.
    slow = {"rate_limit_per_minute": 60, "burst": 1, "timeout": 5}
    config = daemon_config(tmp_path, vendor, interval=3600, page_size=4, prefetch=0, http=slow)
    daemon = await start_daemon(config, grace=30.0, env={"NOTIFY_SOCKET": notify_socket.path})
    await daemon.wait_log("daemon_started")
    await notify_socket.wait_for("READY=1")
    await wait_until(lambda: vendor.world.stats.requests_total >= 2, 15, "the sweep under way")
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    said = await daemon.wait_log("reload_waiting_for_sweeps", since=mark, timeout=2.0)
    assert said["scopes"] == ["scanorbit"] and said["up_to_seconds"] == 30.0
    assert list(said["rate_limited"]) == ["scanorbit:scanorbit"]  # vendor:limit scope
    assert 0 < said["rate_limited"]["scanorbit:scanorbit"] <= 1.0
    await notify_socket.wait_for(  # `systemctl status` shows it too
        "STATUS=reloading: waiting up to 30s for rate-limited sweeps of scanorbit")
    assert not [line for line in daemon.log_lines(mark) if line["event"] == "config_reloaded"]
    await daemon.wait_log("config_reloaded", since=mark, timeout=30)
    assert await daemon.stop() == 0


async def test_a_reload_keeps_the_buckets_of_surviving_scopes_only(
    tmp_path: Path, vendor: Vendor, store: SQLiteStore
) -> None:
    """The handover itself: same bucket object (its spending, its Retry-After pause) under the
    new settings for a scope that survives; none for a scope that is gone."""
    kept, gone = (scanorbit_source(vendor.sim.url, name=name, org=name, api_key=vendor.key)
                  for name in ("kept", "gone"))
    first = Pipeline.build(load(tmp_path, [kept, gone]), store, Health())
    old = first.http.buckets
    assert set(old) == {"scanorbit:kept", "scanorbit:gone"}
    spent = old["scanorbit:kept"]
    await spent.acquire()
    spent.pause(30)
    retuned = {**kept, "http": {"rate_limit_per_minute": 30, "burst": 1}}
    second = Pipeline.build(load(tmp_path, [retuned]), store, Health(), buckets=old)
    bucket = second.http.buckets["scanorbit:kept"]
    assert bucket is spent and set(second.http.buckets) == {"scanorbit:kept"}
    assert (bucket.rate, bucket.capacity) == (0.5, 1.0)
    assert 29 < bucket.wait_ahead() <= 30  # the pause the vendor asked for still holds
    assert set(second.http.throttled()) == {"scanorbit:kept"}
    fresh = Pipeline.build(load(tmp_path, [retuned]), store, Health())
    assert fresh.http.buckets["scanorbit:kept"] is not spent  # a restart starts afresh
    for pipeline in (first, second, fresh):
        await pipeline.http.close()


def load(tmp_path: Path, sources: list[dict[str, Any]]) -> BridgeConfig:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp_path, sources)))
    return load_config(path)
