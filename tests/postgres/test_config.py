"""`state: {backend: postgres}`: its settings, where the DSN comes from (the environment or a
mounted Secret file), and that its password shows up nowhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config import ConfigError, parse_config
from bridge.secrets import redact
from bridge.store.postgres.config import PostgresStateConfig
from bridge.store.postgres.store import PostgresStore

DSN = "postgresql://bridge:s3cr3t-Pa55word@db.internal:5433/bridge"


def config_with(tmp_path: Path, state: dict[str, Any]) -> dict[str, Any]:
    return {"state": state, "admin": {"enabled": False}, "sources": [],
            "sinks": [{"type": "file", "name": "events", "path": str(tmp_path / "e.jsonl")}],
            "routes": {"sinks": ["events"]}}


def problems_of(data: Any, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(data, **kw)
    return err.value.problems


def test_the_dsn_comes_from_the_environment_and_is_never_shown(tmp_path: Path) -> None:
    data = config_with(tmp_path, {"backend": "postgres", "dsn": "${BRIDGE_PG_DSN}",
                                  "pool_max": 4, "statement_timeout": 5})
    config = parse_config(data, env={"BRIDGE_PG_DSN": DSN})
    state = config.state
    assert isinstance(state, PostgresStateConfig)
    assert state.describe() == "postgresql db.internal:5433/bridge schema bridge"
    assert "s3cr3t" not in repr(state) and "s3cr3t" not in state.describe()
    assert "s3cr3t" not in redact(f"could not connect to {DSN}")
    store = state.build()
    assert isinstance(store, PostgresStore) and "s3cr3t" not in store.where


def test_the_dsn_can_be_a_mounted_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "dsn"
    secret.write_text(DSN + "\n")
    secret.chmod(0o600)
    data = config_with(tmp_path, {"backend": "postgres", "dsn_file": str(secret),
                                  "schema": "bridge_prod"})
    state = parse_config(data).state
    assert isinstance(state, PostgresStateConfig)
    assert state.dsn is not None and state.dsn.get_secret_value() == DSN
    assert state.db_schema == "bridge_prod"


@pytest.mark.parametrize(("state", "expected"), [
    ({"backend": "postgres"}, "state.postgres: set dsn (e.g. ${BRIDGE_PG_DSN}) or dsn_file"),
    ({"backend": "postgres", "dsn": DSN, "schema": "Robert'); DROP"}, "state.postgres.schema: "),
    ({"backend": "postgres", "dsn": DSN, "pool_min": 5, "pool_max": 2},
     "state.postgres: pool_min must not exceed pool_max"),
    ({"backend": "postgres", "dsn": DSN, "path": "x.db"},
     "state.postgres.path: Extra inputs are not permitted"),
])
def test_errors_name_the_yaml_path(tmp_path: Path, state: dict[str, Any], expected: str) -> None:
    (problem,) = problems_of(config_with(tmp_path, state))
    assert problem.startswith(expected), problem


@pytest.mark.parametrize(("dsn", "expected"), [
    ("postgresql://bridge:pw@db.internal:5432/bridge",
     "postgresql://bridge:pw@db.internal:5432/bridge?sslmode=verify-full"),
    ("postgresql://bridge@db.internal/bridge?application_name=x",
     "postgresql://bridge@db.internal/bridge?application_name=x&sslmode=verify-full"),
    ("postgresql://bridge@db.internal/bridge?sslmode=require",
     "postgresql://bridge@db.internal/bridge?sslmode=require"),  # said explicitly: kept
    ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
    ("postgresql://postgres@localhost/test", "postgresql://postgres@localhost/test"),
])
def test_a_remote_server_is_verified_by_default(tmp_path: Path, dsn: str, expected: str) -> None:
    state = parse_config(config_with(tmp_path, {"backend": "postgres", "dsn": dsn})).state
    store = state.build()
    assert isinstance(store, PostgresStore) and store.dsn == expected
