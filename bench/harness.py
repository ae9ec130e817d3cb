"""What the benchmarks that measure against a server in another process share.

The server runs in an interpreter of its own, so its work is not counted as the measured
side's and it can have the other core, and prints where it listens (a URL or a port) as its
first line of output. Used by `bench_jira.py` (the fake Jira) and `bench_webhook.py` (a
minimal HTTP receiver). `scratch_dir` is every bench's place for state files.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent


def scratch_dir(prefix: str) -> Path:
    """A new private temporary directory, removed when the process exits: one run of
    bench_core leaves ~0.8 GB of state files, which must not pile up in /tmp run after run."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


class ServerProcess:
    """`python ARGS` in the repository's root, until `stop` (or the end of a `with` block).
    `address` is its first line of output, read before the constructor returns: the server
    listens by then."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                     text=True)
        try:
            assert self.proc.stdout is not None
            self.address = self.proc.stdout.readline().strip()
            if not self.address:
                raise RuntimeError(f"the server {' '.join(args)[:80]!r} exited before saying "
                                   "where it listens")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
