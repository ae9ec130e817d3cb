"""Process-wide interpreter settings that a sweep of 100,000 items needs, and the memory it
gives back: CPython's defaults suit short scripts, not a loop that builds millions of
short-lived objects while a store thread writes beside it. Every sweep calls `tune_for_sweeps`
(only the first changes anything); each setting says what it was measured to save."""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
from collections.abc import Callable

GC_YOUNG_THRESHOLD = 200_000
# Seconds a thread waiting for the GIL lets the running one keep it (CPython's default: 5 ms).
SWITCH_INTERVAL = 0.0002


def tune_for_sweeps() -> None:
    relax_cyclic_gc()
    hand_over_the_gil_sooner()


def relax_cyclic_gc() -> None:
    """Let the cyclic garbage collector run every 200,000 container allocations, not every 700.

    A sweep allocates millions of short-lived containers (vendor JSON, items, events) that
    reference counting frees; with the default threshold the collector traverses the young
    ones thousands of times per 100k-item sweep, and the whole heap (the scope's stored items)
    again and again: seconds of a first sweep (measured with bench/bench_core.py: 2,043
    collections, 8.9 s of a loaded run's wall time, down to 4 and 0.4 s). Not 50,000, as it
    was: a collection costs what is alive among the young, and 50 tenants swept at once keep
    each tenant's rows alive until its pages are all read, so every collection walked ~50k
    of them (9-13 ms each, 0.03 s of a 0.38 s steady sweep in bench/bench_tenants.py; its
    ratio went from 1.31-1.38x to 1.21-1.28x, alternating runs on a quiet 2-core VM). 500,000
    measured no better. Cycles are rare in what bridge builds, so collecting them later costs
    little memory (bench_core's peak RSS at 300k: 227 MB, against 230 MB)."""
    young, *older = gc.get_threshold()
    if young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, *older)


def hand_over_the_gil_sooner() -> None:
    """Let a thread waiting for the GIL have it after 0.2 ms, not 5 ms.

    The SQLite store's writer thread lets go of the GIL for every statement it runs and needs
    it back to bind the next one: a first sweep's chunk of 5,000 items is a dozen statements.
    While the event loop is busy diffing the next pages, each of those waits took up to the
    whole interval, and the sweep then waited for the chunk's commit: 0.4-0.6 s of a 100,000-
    finding first sweep's ~3.5 s, the loop idle (measured beside bench/bench_core.py's first
    sweep, 2-core VM), 0.13 s with 0.5 ms, 0.01-0.07 s with 0.2 ms. A waiting thread is rare
    outside sweeps, and only then does the interval cost a switch. Never lengthens one set
    shorter on purpose."""
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc (musl, macOS): nothing to call
        return None
    return trim


def return_freed_memory() -> bool:
    """Give the C allocator's free pages back to the system after a large sweep.

    Most of what a sweep allocates (vendor pages, event bodies, SQLite rows) is larger than
    Python's small-object allocator handles, so it comes from glibc's malloc. Freed in another
    order than it was taken, it leaves free holes that glibc keeps mapped, and the next sweep's
    peak lands on top of them: at 300k findings (bench/bench_core.py) the steady sweep peaked at
    247 MB without a trim after the first sweep and at 229 MB with one. `malloc_trim(0)` hands
    the free pages back (tens of milliseconds, in C, once per large sweep). False where the C
    library has no malloc_trim."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
