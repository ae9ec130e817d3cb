"""Run `bridge run` as a real child process, as systemd or Kubernetes would."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.waiting import wait_until

LogLine = dict[str, Any]


class DaemonProcess:
    """A `bridge run --config FILE` child with its logs in a file (shown when a test fails)."""

    def __init__(self, config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None,
                 grace: float = 5.0) -> None:
        self.workdir = workdir
        self.config_path = workdir / "bridge.yaml"
        self.write_config(config)
        self.log_path = workdir / "daemon.log"
        self.env = {**os.environ, **(env or {})}
        self.grace = grace
        self.proc: asyncio.subprocess.Process | None = None

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the config file (then `signal(SIGHUP)` to have it reloaded)."""
        self.config_path.write_text(yaml.safe_dump(config))

    async def start(self) -> DaemonProcess:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(self.config_path),
            "--grace", str(self.grace), stdout=log, stderr=log, env=self.env, cwd=self.workdir,
        )
        log.close()
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, exactly like a crash or an OOM kill."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.signal(signal.SIGTERM)
        return await self.wait(timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def mark(self) -> int:
        """The log's current size: pass it as `since` to look only at later lines."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_lines(self, since: int = 0) -> list[LogLine]:
        """The JSON log lines written after byte offset `since` (other lines are skipped)."""
        if not self.log_path.exists():
            return []
        with self.log_path.open("rb") as f:
            f.seek(since)
            data = f.read()
        lines = []
        for raw in data.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                lines.append(line)
        return lines

    async def wait_log(self, event: str, timeout: float = 15.0, since: int = 0,
                       where: Callable[[LogLine], bool] = lambda _: True) -> LogLine:
        """The first log line `event` (after `since`) satisfying `where`; fails with the log
        when it does not come within `timeout` or the process exits first."""
        def logged() -> LogLine | None:
            return next((line for line in self.log_lines(since)
                         if line.get("event") == event and where(line)), None)

        def exited() -> str | None:
            proc = self.proc
            return None if proc is None or proc.returncode is None else \
                f"daemon exited ({proc.returncode}) first:\n{self.logs()}"

        try:
            return await wait_until(logged, timeout, f"log line {event}", every=0.02,
                                    alive=exited)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}:\n{self.logs()}") from None

    async def admin_url(self, timeout: float = 15.0) -> str:
        """`http://host:port` of the admin server, from the `daemon_started` line (admin port 0
        lets the daemon pick a free port, which only its log knows)."""
        line = await self.wait_log("daemon_started", timeout)
        assert line.get("admin"), f"admin server disabled: {line}"
        return f"http://{line['admin']}"


async def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0,
                  file_permissions: bool = False) -> tuple[int, str, str]:
    """`python -m bridge ARGS` to completion: (exit code, stdout, stderr).

    `file_permissions=True` makes them apply even to root: the child runs without the
    capabilities that bypass them (root keeps its uid, so it can still reach the Python
    install, which another user often cannot)."""
    prefix: list[str] = []
    if file_permissions and os.geteuid() == 0:
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "bridge", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
