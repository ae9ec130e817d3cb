"""After a large sweep, the C allocator's free pages go back to the system
(`bridge.runtime.return_freed_memory`): otherwise the next sweep's peak lands on top of them."""

from __future__ import annotations

import os

from bridge.runtime import return_freed_memory

MB = 1024 * 1024


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_freed_memory_below_a_live_allocation_is_given_back() -> None:
    # 80 MB in 4 KB objects (glibc's heap, not Python's small-object allocator), then all freed
    # but the last: the top of the heap stays in use, so free() alone cannot shrink it and
    # the freed pages stay resident, as a sweep's vendor pages and event bodies do.
    held = [bytes(4000) for _ in range(20_000)]
    del held[:-1]
    before = resident()
    assert return_freed_memory()  # glibc: this machine's and the container image's C library
    assert resident() < before - 40 * MB
    assert len(held) == 1
