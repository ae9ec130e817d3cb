"""State stores: item states, sweeps, cursors, and the outbox, behind one interface (`Store`),
with the operator's file commands apart (`StoreMaintenance`). Backends: `sqlite` (the embedded
default, bridge/store/sqlite.py) and `memory` (bridge/store/memory.py)."""

from bridge.store.base import (
    Store,
    StoreCorruptError,
    StoreError,
    StoreMaintenance,
    StoreUnavailableError,
    maintenance,
)

__all__ = ["Store", "StoreCorruptError", "StoreError", "StoreMaintenance",
           "StoreUnavailableError", "maintenance"]
