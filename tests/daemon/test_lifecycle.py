"""Signals against the real daemon process: SIGTERM mid-sweep and mid-delivery loses nothing
and exits 0, SIGHUP swaps in a valid config and refuses an invalid one, and systemd hears
READY=1, WATCHDOG=1 and STOPPING=1 on a real notify socket."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from bridge.sim.faults import Fault
from tests.daemon._http import get
from tests.daemon.conftest import NotifySocket, StartDaemon, Vendor, daemon_config, free_port
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until


def keys(path: Path) -> list[str]:
    """Item keys in a file sink's JSON lines, in order."""
    if not path.exists():
        return []
    return [json.loads(line)["key"] for line in path.read_text().splitlines() if line]


async def test_sigterm_during_a_sweep_commits_nothing_half_done(
    tmp_path: Path, vendor: Vendor, receiver: Receiver, start_daemon: StartDaemon
) -> None:
    world = vendor.world
    for _ in range(250):
        world.add_finding()
    # Page 2 stalls far beyond the grace period; the client would wait for it.
    stall = world.faults.add(Fault(kind="timeout", path="/findings$", page=2, delay=30))
    config = daemon_config(tmp_path, vendor, receiver.url, interval=3600,
                           http={"timeout": 30, "max_retries": 0})
    daemon = await start_daemon(config, grace=1.0)
    await wait_until(lambda: stall.hits > 0, 15, "the sweep reached page 2")
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait(10) == 0, daemon.logs()
    assert time.monotonic() - started < 1.0 + 2.0  # the grace, plus interpreter teardown
    assert await daemon.wait_log("sweep_abandoned", where=lambda r: r["scope"] == "scanorbit")
    assert receiver.attempts == []
    with sqlite3.connect(config["state"]["path"]) as db:  # page 1 was not committed alone
        assert db.execute("SELECT COUNT(*) FROM items").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)

    daemon = await start_daemon(config)
    await receiver.wait_for(lambda r: len(r.received) >= 250)
    assert await daemon.stop() == 0
    delivered = receiver.delivered_ids()
    assert len(delivered) == len(set(delivered)) == 250  # each exactly once
    assert {r.body["key"] for r in receiver.received} == set(world.findings)


@pytest.mark.parametrize("receiver_mode", ["slow", "hang"])
async def test_sigterm_during_deliveries_loses_nothing(
    tmp_path: Path, vendor: Vendor, receiver: Receiver, start_daemon: StartDaemon,
    receiver_mode: str
) -> None:
    """slow: the in-flight batch finishes within the grace period, so nothing is sent twice;
    hang: it is abandoned at the deadline and sent again, same ids, after the restart."""
    world = vendor.world
    for _ in range(35):
        world.add_finding()
    if receiver_mode == "slow":
        receiver.delay = 0.3
    else:
        receiver.mode = "hang"
    config = daemon_config(tmp_path, vendor, receiver.url, interval=3600)
    daemon = await start_daemon(config, grace=1.5)
    await receiver.wait_for(lambda r: len(r.attempts) >= 1)
    mark = daemon.mark()
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait(10) == 0, daemon.logs()
    abandoned = [r for r in daemon.log_lines(mark) if r["event"] == "delivery_abandoned"]
    before = receiver.delivered_ids()
    in_flight = {a.id for a in receiver.attempts} - set(before)
    if receiver_mode == "slow":
        assert not abandoned and before and not in_flight  # the batch in hand was finished
    else:
        assert [r["sink"] for r in abandoned] == ["hook"] and not before and in_flight

    receiver.mode, receiver.delay = "ok", 0.0
    daemon = await start_daemon(config)
    await receiver.wait_for(lambda r: len(set(r.delivered_ids())) >= 35)
    assert await daemon.stop() == 0
    delivered = receiver.delivered_ids()
    assert len(set(delivered)) == 35
    assert {r.body["key"] for r in receiver.received} == set(world.findings)
    assert in_flight <= set(delivered)  # what was cut off came again with the same ids
    assert len(delivered) - len(set(delivered)) == 0  # and nothing was delivered twice
    by_key: dict[str, set[str]] = {}
    for attempt in receiver.attempts:
        by_key.setdefault(attempt.body["key"], set()).add(attempt.id)
    assert all(len(ids) == 1 for ids in by_key.values())  # one id per event, every attempt


async def test_sighup_with_a_good_config_swaps_it_in(
    tmp_path: Path, vendor: Vendor, start_daemon: StartDaemon
) -> None:
    world = vendor.world
    first = world.add_finding()["id"]
    config = daemon_config(tmp_path, vendor)
    config["admin"] = {"port": free_port()}  # fixed: a new token must not move the server
    daemon = await start_daemon(config)
    await wait_until(lambda: keys(tmp_path / "events.jsonl") == [first], 15, "first delivery")

    base = await daemon.admin_url()
    token = tmp_path / "admin-token"
    token.write_text("adm_" + "k7Qw2" * 8 + "\n")
    config["sinks"].append({"name": "audit", "type": "file", "path": str(tmp_path / "audit.jsonl")})
    config["routes"] = {"sinks": ["events", "audit"]}
    config["log"] = {"format": "json", "levels": {"bridge.sweep": "warning"}}
    config["admin"] = {**config["admin"], "token_file": str(token)}
    daemon.write_config(config)
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    reloaded = await daemon.wait_log("config_reloaded", since=mark)
    assert reloaded["path"] == str(daemon.config_path) and reloaded["sinks"] == ["events", "audit"]
    assert f"http://{reloaded['admin']}" == base  # restarted in place, now wanting the token
    assert (await get(f"{base}/readyz"))[0] == 401

    second = world.add_finding()["id"]
    await wait_until(lambda: keys(tmp_path / "audit.jsonl") == [second], 15, "the new sink")
    await wait_until(lambda: keys(tmp_path / "events.jsonl") == [first, second], 15, "old sink")
    # The new log levels apply: sweeps go on, but their info lines are gone.
    assert not [r for r in daemon.log_lines(mark) if r["event"] == "sweep_done"]
    _, ready = await get(f"{base}/readyz", token.read_text().strip())
    assert set(ready["sinks"]) == {"events", "audit"} and ready["config"]["ok"], ready
    assert "adm_k7Qw2" not in daemon.logs()
    assert await daemon.stop() == 0


async def test_sighup_with_a_bad_config_keeps_the_old_one_running(
    tmp_path: Path, vendor: Vendor, start_daemon: StartDaemon
) -> None:
    world = vendor.world
    first = world.add_finding()["id"]
    config = daemon_config(tmp_path, vendor)
    daemon = await start_daemon(config)
    await wait_until(lambda: keys(tmp_path / "events.jsonl") == [first], 15, "first delivery")

    bad = json.loads(json.dumps(config))
    bad["sources"][0]["interval"] = 0
    daemon.write_config(bad)
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    rejected = await daemon.wait_log("reload_rejected", since=mark)
    assert rejected["level"] == "error" and rejected["path"] == str(daemon.config_path)
    problems = rejected["problems"]
    assert any(p.startswith("sources[0].interval: ") for p in problems), problems

    # Still running the old config: sweeping, delivering, ready, and saying what happened.
    second = world.add_finding()["id"]
    await wait_until(lambda: keys(tmp_path / "events.jsonl") == [first, second], 15, "delivery")
    base = await daemon.admin_url()
    status, ready = await get(f"{base}/readyz")
    assert status == 200 and ready["status"] == "degraded" and not ready["config"]["ok"]
    assert "sources[0].interval" in ready["config"]["error"]
    assert any(r.startswith("config reload rejected, previous config still running")
               for r in ready["reasons"]), ready["reasons"]

    # An admin address that cannot be bound is rejected too, and the old server answers on.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon.write_config({**config, "admin": {"port": port}})
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        rejected = await daemon.wait_log("reload_rejected", since=mark)
    assert rejected["problems"] == [rejected["problems"][0]]
    assert rejected["problems"][0].startswith(f"admin: cannot listen on 127.0.0.1:{port}")
    assert (await get(f"{base}/readyz"))[0] == 200

    # Fixing the file and reloading again clears it.
    daemon.write_config(config)
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    await daemon.wait_log("config_reloaded", since=mark)
    status, ready = await get(f"{base}/readyz")
    assert status == 200 and ready["config"]["ok"] and ready["config"]["error"] is None
    assert await daemon.stop() == 0


async def test_systemd_hears_ready_watchdog_and_stopping(
    tmp_path: Path, vendor: Vendor, start_daemon: StartDaemon, notify_socket: NotifySocket
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "200000"}
    daemon = await start_daemon(daemon_config(tmp_path, vendor), env=env)
    seen = await notify_socket.wait_for("READY=1")
    await daemon.wait_log("daemon_started")  # READY=1 means started: admin up, schedule running
    seen += await notify_socket.wait_for("WATCHDOG=1")
    seen += await notify_socket.wait_for("WATCHDOG=1")  # and again: it keeps pinging
    daemon.signal(signal.SIGHUP)  # a reload is bracketed by RELOADING=1 ... READY=1
    reloading = (await notify_socket.wait_for("RELOADING=1"))[-1].splitlines()
    assert reloading[-1].startswith("MONOTONIC_USEC=") and int(reloading[-1].split("=")[1]) > 0
    await notify_socket.wait_for("READY=1")
    await daemon.wait_log("config_reloaded")
    daemon.signal(signal.SIGTERM)
    seen += await notify_socket.wait_for("STOPPING=1")
    assert await daemon.wait(10) == 0
    assert not any("STOPPING=1" in s for s in seen[:-1]) and seen[-1].startswith("STOPPING=1")
