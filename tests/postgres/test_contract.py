"""The PostgreSQL store keeps every promise of the `Store` interface: the whole
`StoreContract` suite (tests/support/store_contract.py), the one the memory and SQLite stores
pass, against the real server, each test in a schema of its own."""

from __future__ import annotations

import pytest

from bridge.store.base import Store
from bridge.store.postgres.store import PostgresStore
from tests.support.postgres import PgSchema
from tests.support.store_contract import StoreContract, StoreFactory


class TestPostgresStoreContract(StoreContract):
    @pytest.fixture
    def stores(self, pg: PgSchema) -> StoreFactory:
        return pg.store

    async def backend_state(self, store: Store) -> object:
        assert isinstance(store, PostgresStore)
        return await PgSchema(store.dsn, store.schema).dump()
