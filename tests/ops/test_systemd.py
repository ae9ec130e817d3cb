"""sd_notify against a fake NOTIFY_SOCKET: a real AF_UNIX datagram socket in /tmp."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid

import pytest

from bridge.systemd import notify, watchdog_interval, watchdog_loop


def test_ready_and_stopping(notify_socket: socket.socket) -> None:
    assert notify("READY=1")
    assert notify_socket.recv(4096) == b"READY=1"
    assert notify("STOPPING=1", "STATUS=draining deliveries")
    assert notify_socket.recv(4096) == b"STOPPING=1\nSTATUS=draining deliveries"


def test_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"bridge-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1", "MAINPID=" + str(os.getpid()))
        assert sock.recv(4096) == f"READY=1\nMAINPID={os.getpid()}".encode()


def test_noop_and_failures_never_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", f"/tmp/no-such-socket-{uuid.uuid4().hex}")
    assert notify("READY=1") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "-5", "soon"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert watchdog_interval() is None


async def test_watchdog_loop_pings_until_stopped(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # pings every 0.05 s
    notify_socket.setblocking(False)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.create_task(watchdog_loop(stop))
    pings: list[bytes] = []
    start = time.monotonic()
    while len(pings) < 3:
        pings.append(await asyncio.wait_for(loop.sock_recv(notify_socket, 4096), timeout=5))
    assert pings == [b"WATCHDOG=1"] * 3
    assert time.monotonic() - start >= 0.09  # paced at the interval, not a busy loop
    stop.set()
    await asyncio.wait_for(task, timeout=5)


async def test_watchdog_loop_without_watchdog_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    await asyncio.wait_for(watchdog_loop(asyncio.Event()), timeout=5)
