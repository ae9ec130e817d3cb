"""Progress (bridge/progress.py) as the operator sees it: `bridge once` and `bridge demo` driven
through a real pseudo-terminal show a live line per scope (pages fetched of the total, items,
requests, requests left in the rate-limit window, ETA) drawn by rich, with no raw control
character but rich's own cursor moves, even when the vendor's words hold terminal escapes; off
a terminal the same numbers arrive as periodic `sweep_progress` log lines."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import struct
import sys
import termios
from pathlib import Path
from typing import Any

from bridge.sim.faults import Fault
from tests.security.hostile_text import UNSAFE
from tests.support.daemon import run_cli

from .conftest import Vendor, operator_config, write_config

# What rich's Live display writes to move the cursor: erase the line, go up one, hide and show
# the cursor. Anything else raw (a clear screen, a window title) would be an injection.
RICH_MOVES = {"\x1b[2K", "\x1b[1A", "\x1b[?25l", "\x1b[?25h"}
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HOSTILE_CODE = "BAD\x1b[2J\x1b]0;owned\x07\r\nNEW       critical FORGED\u2028"


async def on_a_terminal(*args: str, timeout: float = 90.0) -> tuple[int, str]:
    """`python -m bridge ARGS` with a pseudo-terminal (200 columns) as stdin, stdout and
    stderr: (exit code, everything it wrote)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, stdin=slave, stdout=slave, stderr=slave,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "200"})
    os.close(slave)
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []

    def read_all() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    try:
        await asyncio.wait_for(loop.run_in_executor(None, read_all), timeout)
        code = await asyncio.wait_for(proc.wait(), timeout)
    finally:
        os.close(master)
        if proc.returncode is None:
            proc.kill()
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def assert_only_rich_moves(output: str) -> str:
    """Every escape sequence is one of rich's cursor moves, and nothing else unsafe is raw;
    returns the text without them (what the screen shows, line by line)."""
    foreign = {m for m in ESCAPE.findall(output)} - RICH_MOVES
    assert not foreign, f"raw escape sequences besides rich's: {foreign}"
    text = ESCAPE.sub("", output)
    raw = {c for c in text if c in UNSAFE} - {"\r", "\n"}
    assert not raw, f"raw control characters: {sorted(map(repr, raw))}"
    return text


def drawn(text: str) -> list[str]:
    """Every version of every line drawn (the live display rewrites its line after a CR)."""
    return re.split(r"[\r\n]+", text)


def rate_limited(tmp_path: Path, vendor: Vendor, per_minute: int = 300) -> Path:
    """A sweep the client's rate limit stretches over a few seconds, as a real one would."""
    config = operator_config(tmp_path, vendor)
    config["sources"][0]["http"] = {"rate_limit_per_minute": per_minute, "burst": 5}
    return write_config(tmp_path, config)


async def test_bridge_once_shows_a_live_line_per_scope(tmp_path: Path, vendor: Vendor) -> None:
    vendor.world.bulk_add(2000)
    code, output = await on_a_terminal("once", "--config", str(rate_limited(tmp_path, vendor)))
    assert code == 0, output
    lines = drawn(assert_only_rich_moves(output))
    live = [ln for ln in lines if ln.startswith("scanorbit  pages ")]
    assert live, output
    pages = [int(m.group(1)) for ln in live if (m := re.search(r"pages (\d+)/20 ", ln))]
    assert pages and pages == sorted(pages) and pages[0] < 20  # it moved while we watched
    assert any(re.search(r"items [\d,]+  requests \d+  rate limit: \d+ left  ETA \d+:\d\d$", ln)
               for ln in live), live
    # 20 pages, the scan probe and the accounts.
    assert "scanorbit  complete  pages 20/20  items 2,000  requests 22  in 0:0" in output
    assert '"event": "sweep_done"' in output  # log lines scrolled above the display


async def test_vendor_words_in_the_line_are_inert(tmp_path: Path, vendor: Vendor) -> None:
    for _ in range(150):
        vendor.world.add_finding()
    vendor.world.faults.add(Fault(kind="status", path="/findings$", page=2, status=503,
                                  code=HOSTILE_CODE, times=-1))
    config = operator_config(tmp_path, vendor)
    # Retries are quick so the test is short; the live display may redraw its last line
    # any number of times while the process winds down, so every drawing is checked.
    config["sources"][0]["http"] = {"backoff_initial": 0.01, "backoff_max": 0.05}
    code, output = await on_a_terminal("once", "--config", str(write_config(tmp_path, config)))
    assert code == 3, output
    text = assert_only_rich_moves(output)
    finals = [ln for ln in drawn(text) if ln.startswith("scanorbit  incomplete  ")]
    assert finals, output
    for final in finals:
        assert ("HTTP 503 BAD\\x1b[2J\\x1b]0;owned\\x07\\r\\nNEW       critical FORGED\\u2028"
                in final), final


async def test_off_a_terminal_progress_is_periodic_log_lines(
        tmp_path: Path, vendor: Vendor) -> None:
    vendor.world.bulk_add(2000)
    code, _, err = await run_cli("once", "--config", str(rate_limited(tmp_path, vendor)),
                                 "--progress-interval", "0.5")
    assert code == 0, err
    logged = [json.loads(ln) for ln in err.splitlines() if ln.startswith("{")]
    progress = [ln for ln in logged if ln["event"] == "sweep_progress"]
    assert len(progress) >= 2, err
    first: dict[str, Any] = progress[0]
    assert (first["scope"], first["source"], first["pages_total"]) == ("scanorbit", "scanorbit", 20)
    assert 0 < first["pages"] < 20 and first["items"] == first["pages"] * 100
    # The scan probe, the accounts, the pages, and the next page when its prefetch has already
    # started (a loaded machine reports between the two).
    assert first["pages"] + 2 <= first["requests"] <= first["pages"] + 3, first
    assert isinstance(first["rate_limit_left"], int) and first["eta_seconds"] > 0
    assert [p["pages"] for p in progress] == sorted(p["pages"] for p in progress)
    done = [i for i, ln in enumerate(logged) if ln["event"] == "sweep_done"]
    assert all(logged.index(p) < done[0] for p in progress)  # none after the sweep
    assert "\x1b" not in err


async def test_no_progress_means_none(tmp_path: Path, vendor: Vendor) -> None:
    vendor.world.bulk_add(300)
    code, output = await on_a_terminal("once", "--no-progress", "--config",
                                       str(rate_limited(tmp_path, vendor, per_minute=60_000)))
    assert code == 0, output
    assert "pages " not in output and "\x1b[2K" not in output


async def test_bridge_demo_shows_a_line_per_scope(tmp_path: Path) -> None:
    code, output = await on_a_terminal("demo", "--duration", "4", "--interval", "1",
                                       "--state-dir", str(tmp_path / "demo"))
    assert code == 0, output
    lines = drawn(assert_only_rich_moves(output))
    for scope in ("scanorbit", "aether365/contoso", "aether365/fabrikam", "ayliea"):
        assert any(ln.startswith(f"{scope}  complete  ") for ln in lines), (scope, output)
    assert any(ln.startswith("NEW ") for ln in lines)  # the events scroll above the lines
