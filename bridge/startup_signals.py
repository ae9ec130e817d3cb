"""Signals that arrive before the daemon can act on them: held, never fatal.

Importing the command line takes most of a second (pydantic, aiohttp, the config models), and
loading the config a little more. A SIGHUP's default action terminates the process, and systemd's
`ExecReload`, a config-management run or a log rotation script can send one right after a
(re)start. So the `bridge` command's first instruction, before those imports, is `hold()`:
SIGHUP, SIGTERM and SIGINT are only remembered until someone takes them over:

- the daemon (`bridge run`) installs its own handlers, then `take()`s what was held: a SIGHUP
  becomes a reload as soon as it runs, a SIGTERM or SIGINT a clean exit before it opens anything;
- every other command `release()`s them: the previous handlers come back and what was held is
  delivered again, so `bridge once` still ends on SIGHUP and Ctrl-C as a shell command should.

Only the `bridge` command holds signals: a program that imports `bridge.cli` (the test suite, an
embedding) keeps its own handling. This module imports nothing the interpreter has not already
loaded at startup (no `typing`, no `pathlib`): it runs before everything else, and every
millisecond here is one in which a signal could still be fatal.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

HELD = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
STOPPING = frozenset({signal.SIGTERM, signal.SIGINT})

_held: list[signal.Signals] = []  # in arrival order
_previous: dict[signal.Signals, signal._HANDLER] = {}


def is_bridge_command(argv0: str) -> bool:
    """True for the `bridge` console script and for `python -m bridge`."""
    folder, name = os.path.split(argv0)
    return name == "bridge" or (name == "__main__.py" and os.path.basename(folder) == "bridge")


def _remember(signum: int, frame: FrameType | None) -> None:
    _held.append(signal.Signals(signum))


def hold() -> None:
    """Remember SIGHUP, SIGTERM and SIGINT instead of acting on them (idempotent)."""
    if _previous:
        return
    for sig in HELD:
        _previous[sig] = signal.signal(sig, _remember)


def holding() -> bool:
    return bool(_previous)


def take() -> list[signal.Signals]:
    """The signals held so far, in arrival order, now the caller's to act on."""
    taken = list(_held)
    del _held[: len(taken)]
    return taken


def release() -> None:
    """Back to the handlers from before `hold()`, and deliver again what was held."""
    if not _previous:
        return
    for sig, handler in _previous.items():
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set from C
    _previous.clear()
    for sig in dict.fromkeys(take()):  # once each is enough: their actions do not add up
        os.kill(os.getpid(), sig)


if is_bridge_command(sys.argv[0]):
    hold()
