"""Fixtures for the operations tests: isolated logging state and a fake NOTIFY_SOCKET."""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import pytest
import structlog

import bridge.logging as bridge_logging


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
