"""The memory store keeps the same promises as the SQLite store (the whole `StoreContract`
suite), and says plainly that it has no file to back up or check."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.store.base import StoreError, StoreMaintenance, maintenance
from bridge.store.memory import MemoryStore
from tests.support.store_contract import StoreContract, StoreFactory, run_sweep

from ._helpers import SCOPE, item, sweep


class TestMemoryStoreContract(StoreContract):
    @pytest.fixture
    def stores(self) -> StoreFactory:
        # The state lives in the object: "reopening" is opening the same one again.
        state = MemoryStore()
        return lambda: state


async def test_two_memory_stores_share_nothing() -> None:
    first, second = MemoryStore(), MemoryStore()
    await first.open()
    await second.open()
    await run_sweep(first, sweep(item("a")), cursor={"scan": "1"})
    assert await second.load_items(SCOPE, ["finding"]) == {}
    assert await second.load_cursor(SCOPE) == {} and await second.claim("siem", 10) == []


async def test_there_is_no_file_to_back_up_or_check(tmp_path: Path) -> None:
    store = MemoryStore()
    await store.open()
    assert not isinstance(store, StoreMaintenance)
    with pytest.raises(StoreError, match="MemoryStore has no state file to back up or check"):
        maintenance(store)
    assert not hasattr(store, "backup") and not hasattr(store, "check")
