"""Fixtures for the operations tests: isolated logging state, a fake NOTIFY_SOCKET, tools."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import bridge.logging as bridge_logging

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """A stream for `configure_logging`, with global logging state restored afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield io.StringIO()
    for name in bridge_logging._leveled:
        logging.getLogger(name).setLevel(logging.NOTSET)
    bridge_logging._leveled.clear()
    bridge_logging._handler = None
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.configure(**saved)
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A real AF_UNIX datagram socket standing in for systemd's; NOTIFY_SOCKET points at it."""
    directory = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")  # sun_path is 108 bytes at most
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5.0)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield sock
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def _readme_installs(package: str) -> bool:
    readme = REPO / "README.md"
    if not readme.exists():
        return False
    pattern = re.compile(rf"(apt-get|apt|pip)\s+install[^\n]*(?<![\w.-]){re.escape(package)}(?![\w.-])")
    return pattern.search(readme.read_text(encoding="utf-8")) is not None


def require_tool(tool: str, package: str) -> str:
    """Path of `tool`, or skip. Under CI it is a failure instead when README.md installs
    `package` (Debian or PyPI), because then its absence is a broken setup, not a choice."""
    found = shutil.which(tool)
    if found:
        return found
    if os.environ.get("CI") == "true" and _readme_installs(package):
        pytest.fail(f"{tool} is missing although README.md installs {package}")
    pytest.skip(f"{tool} not installed (package {package})")
