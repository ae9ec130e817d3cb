"""`bridge run` under operating-system limits: a file size limit (RLIMIT_FSIZE), which fails
writes past it exactly where a full disk would (EFBIG instead of ENOSPC, through the same code
paths), and file permissions that apply even to root (the capabilities that bypass them are
dropped, as `run_cli(file_permissions=True)` does)."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonProcess

NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def file_size_limit(limit: int) -> Callable[[], None]:
    """A `preexec_fn`: writes beyond `limit` bytes fail with EFBIG instead of killing the
    process with SIGXFSZ (the default), just as ENOSPC fails them on a full disk."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


class LimitedDaemon(DaemonProcess):
    """A `DaemonProcess` started with a `preexec_fn` and/or without DAC override."""

    def __init__(self, config: dict[str, Any], workdir: Path, *, grace: float = 5.0,
                 preexec: Callable[[], None] | None = None, file_permissions: bool = False) -> None:
        super().__init__(config, workdir, grace=grace)
        self.preexec = preexec
        self.prefix = NO_DAC if file_permissions and os.geteuid() == 0 else []

    async def start(self) -> LimitedDaemon:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *self.prefix, sys.executable, "-m", "bridge", "run", "--config",
            str(self.config_path), "--grace", str(self.grace), stdout=log, stderr=log,
            env=self.env, cwd=self.workdir, preexec_fn=self.preexec,
        )
        log.close()
        return self
