"""Progress of the sweeps in flight, for the person waiting on `bridge once` or `bridge demo`.

A first sweep that a vendor's rate limit stretches to ten minutes must not look like a hang. Each
sweep reports, per scope: pages fetched of the total (where the vendor says the total), items
seen, requests made, requests left in the rate-limit window (our client's token bucket, which
sits below the vendor's limit), and an estimate of the time left that counts the rate limit.

On a terminal that is a live line per scope drawn by `rich` (a maintained library rather than
hand-written terminal codes); anywhere else the same numbers are periodic `sweep_progress` log
lines. Vendor words (notes, scope and tenant names) are made `printable` before they are drawn.

The parts that know the numbers call `page(...)` (bridge/sources/paging.py) and `rate(...)`
(bridge/http.py); each is one context-variable lookup and nothing more while no one watches
(the daemon). `bridge.sweep` opens a `ScopeProgress` per sweep with `sweeping(...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TextIO

import structlog

from bridge.secrets import redact
from bridge.textsafe import printable

log = structlog.get_logger(__name__)


@dataclass
class ScopeProgress:
    """One sweep of one scope, as far as it got."""

    scope: str
    source: str
    started: float = field(default_factory=time.monotonic)
    # Per list walked ("findings", "results"...): (pages fetched, total or None when unknown).
    lists: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    items: int = 0
    requests: Callable[[], int] = lambda: 0
    rate_left: int | None = None
    rate_per_second: float | None = None
    outcome: str | None = None  # set when the sweep is over
    note: str = ""
    finished: float | None = None

    @property
    def pages(self) -> int:
        return sum(done for done, _ in self.lists.values())

    @property
    def pages_total(self) -> int | None:
        totals = [total for _, total in self.lists.values()]
        return None if not totals or None in totals else sum(t or 0 for t in totals)

    def eta(self, now: float) -> float | None:
        """Seconds left: the pages still to fetch at the pace so far, and never less than
        what the rate limit allows for them."""
        total, done = self.pages_total, self.pages
        if self.outcome is not None or total is None or done == 0 or done >= total:
            return None
        left = total - done
        eta = (now - self.started) / done * left
        if self.rate_per_second and self.rate_left is not None and left > self.rate_left:
            eta = max(eta, (left - self.rate_left) / self.rate_per_second)
        return eta

    def fields(self, now: float) -> dict[str, object]:
        eta = self.eta(now)
        return {"scope": self.scope, "source": self.source, "pages": self.pages,
                "pages_total": self.pages_total, "items": self.items,
                "requests": self.requests(), "rate_limit_left": self.rate_left,
                "eta_seconds": round(eta, 1) if eta is not None else None,
                "elapsed_seconds": round((self.finished or now) - self.started, 1)}

    def line(self, now: float) -> str:
        """One readable line, vendor words made printable."""
        total = self.pages_total
        pages = f"pages {self.pages}/{total}" if total is not None else f"pages {self.pages}"
        took = _clock((self.finished or now) - self.started)
        if self.outcome is not None:
            why = f": {self.note}" if self.note else ""
            text = (f"{self.scope}  {self.outcome}  {pages}  items {self.items:,}  "
                    f"requests {self.requests()}  in {took}{why}")
        else:
            rate = f"  rate limit: {self.rate_left} left" if self.rate_left is not None else ""
            eta = self.eta(now)
            text = (f"{self.scope}  {pages}  items {self.items:,}  requests {self.requests()}"
                    f"{rate}  {'ETA ' + _clock(eta) if eta is not None else 'elapsed ' + took}")
        return printable(redact(text))


def _clock(seconds: float) -> str:
    seconds = max(0, math.ceil(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else \
        f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


_current: ContextVar[ScopeProgress | None] = ContextVar("bridge_progress", default=None)


def page(what: str, done: int, total: int | None) -> None:
    """`done` pages of the list `what` fetched, of `total` (None: the vendor does not say)."""
    current = _current.get()
    if current is not None:
        current.lists[what] = (done, total)


def rate(left: float, per_minute: float) -> None:
    """Requests left in the rate-limit window after the one just made."""
    current = _current.get()
    if current is not None:
        current.rate_left = max(0, math.floor(left))
        current.rate_per_second = per_minute / 60.0


class Tracker:
    """The sweeps in flight and the last one of each scope."""

    def __init__(self) -> None:
        self.scopes: dict[str, ScopeProgress] = {}

    def start(self, scope: str, source: str, requests: Callable[[], int]) -> ScopeProgress:
        progress = ScopeProgress(scope, source, requests=requests)
        self.scopes[scope] = progress
        return progress

    def lines(self) -> list[str]:
        now = time.monotonic()
        return [p.line(now) for p in self.scopes.values()]


_tracker: Tracker | None = None


@contextlib.contextmanager
def sweeping(scope: str, source: str, requests: Callable[[], int]) -> Iterator[ScopeProgress]:
    """Progress of one sweep, reported while a `reporting` block watches (else kept quietly)."""
    progress = (_tracker.start(scope, source, requests) if _tracker is not None
                else ScopeProgress(scope, source, requests=requests))
    token = _current.set(progress)
    try:
        yield progress
    finally:
        _current.reset(token)
        progress.finished = time.monotonic()
        progress.outcome = progress.outcome or "stopped"


@contextlib.asynccontextmanager
async def reporting(stream: TextIO | None = None, *, interval: float = 5.0,
                    live: bool | None = None) -> AsyncIterator[Tracker]:
    """Watch every sweep in this block: a live display when `stream` (stderr) is a terminal,
    else a `sweep_progress` log line per sweep in flight every `interval` seconds."""
    global _tracker
    stream = stream if stream is not None else sys.stderr
    tracker = _tracker = Tracker()
    use_live = stream.isatty() if live is None else live
    try:
        if use_live:
            with _live(tracker, stream):
                yield tracker
        else:
            task = asyncio.create_task(_log_every(tracker, interval), name="progress-log")
            try:
                yield tracker
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        _tracker = None


async def _log_every(tracker: Tracker, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        for progress in list(tracker.scopes.values()):
            if progress.outcome is None:
                log.info("sweep_progress", **progress.fields(now))


@contextlib.contextmanager
def _live(tracker: Tracker, stream: TextIO) -> Iterator[None]:
    """The live lines on `stream`. Log handlers writing to the terminal are pointed at the
    display's own stream meanwhile, so a log line scrolls above the display, not through it.
    (rich is imported here: the daemon, which never draws, does not pay for it.)"""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    console = Console(file=stream, highlight=False, markup=False, emoji=False)

    def render() -> Group:
        return Group(*(Text(line) for line in tracker.lines() or ["starting…"]))

    with Live(console=console, get_renderable=render, refresh_per_second=4,
              redirect_stdout=True, redirect_stderr=True):
        handlers = [h for h in logging.getLogger().handlers
                    if isinstance(h, logging.StreamHandler)
                    and h.stream in (sys.__stderr__, sys.__stdout__, stream)]
        previous = [h.setStream(sys.stderr) for h in handlers]  # Live's redirected stderr
        try:
            yield
        finally:
            for handler, old in zip(handlers, previous, strict=True):
                if old is not None:
                    handler.setStream(old)
