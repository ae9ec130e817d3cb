"""State stores: item states, sweeps, cursors, and the outbox, behind one interface."""

from bridge.store.base import Store, StoreError

__all__ = ["Store", "StoreError"]
