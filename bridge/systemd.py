"""sd_notify without libsystemd: tell systemd we are READY, STOPPING, or still alive.

The protocol is one datagram of newline-separated `KEY=VALUE` lines to the AF_UNIX socket named
by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). Outside systemd the variable
is unset and every call is a cheap no-op, so the daemon can call these unconditionally.

The watchdog pings from the event loop on purpose: a loop that stops turning stops pinging, and
systemd restarts the service (`WatchdogSec=` in the unit).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import structlog

log = structlog.get_logger(__name__)

SEND_TIMEOUT = 1.0


def _address(raw: str) -> str | None:
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None  # vsock: and other transports are not ours to speak


def notify(*states: str) -> bool:
    """Send `states` (e.g. "READY=1", "STATUS=sweeping") as one message; True if delivered."""
    raw = os.environ.get("NOTIFY_SOCKET")
    if not raw or not states:
        return False
    address = _address(raw)
    if address is None:
        log.debug("sd_notify_unsupported_socket", notify_socket=raw)
        return False
    message = "\n".join(states).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("sd_notify_failed", notify_socket=raw, error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between pings (half of `WatchdogSec=`), or None when no watchdog is set for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # meant for another process (we were forked or exec'd by it)
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000 / 2


async def watchdog_loop(stop: asyncio.Event) -> None:
    """Send WATCHDOG=1 every `watchdog_interval()` seconds until `stop` is set."""
    interval = watchdog_interval()
    if interval is None:
        return
    log.info("sd_watchdog_enabled", interval=interval)
    while not stop.is_set():
        notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
