"""The operator's commands for moving state and seeing who owns what:
`bridge state migrate --from sqlite:PATH --to postgres` (and back), `bridge state leases`.

A store is named on the command line as `sqlite:PATH` (a state file) or `postgres` (the
`state:` section of the config, whose DSN stays out of the command line and shell history).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bridge.config import BridgeConfig
from bridge.store.base import Store, StoreError
from bridge.store.postgres.config import PostgresStateConfig
from bridge.store.postgres.leases import lease_rows
from bridge.store.postgres.store import PostgresStore
from bridge.store.postgres.transfer import Copied, copy_state
from bridge.store.sqlite import SQLiteStore
from bridge.textsafe import printable


class SpecError(ValueError):
    """A store named in a way this command cannot use (the CLI's usage error, exit 2)."""


def store_from_spec(spec: str, config: BridgeConfig, *, must_exist: bool) -> Store:
    """The store `spec` names (not opened). `must_exist`: a state file that is not there is an
    error (a source), not a new empty file."""
    if spec.startswith("sqlite:"):
        path = Path(spec.removeprefix("sqlite:"))
        if not str(path):
            raise SpecError(f"{spec!r}: name the state file, e.g. sqlite:/var/lib/bridge/bridge.db")
        if must_exist and not path.is_file():
            raise SpecError(f"{spec!r}: no such state file")
        return SQLiteStore(path)
    if spec == "postgres":
        if not isinstance(config.state, PostgresStateConfig):
            raise SpecError("'postgres' is the config's state: section, which must then say "
                            f"backend: postgres (it says {config.state.backend})")
        return config.state.build()
    raise SpecError(f"{spec!r}: name a store as sqlite:PATH or postgres (the config's state:)")


async def migrate(config: BridgeConfig, source_spec: str, target_spec: str,
                  say: Callable[[str], None] = print) -> Copied:
    """Copy the state from one store into another, empty one; both closed afterwards."""
    if source_spec == target_spec:
        raise SpecError("--from and --to name the same store")
    source = store_from_spec(source_spec, config, must_exist=True)
    target = store_from_spec(target_spec, config, must_exist=False)
    await source.open()
    try:
        await target.open()
        try:
            say(f"copying the state of {source_spec} into {target_spec} (stop every bridge "
                "that uses either first: what they write meanwhile is not copied)")
            copied = await copy_state(source, target, [s.name for s in config.sinks], say)
        finally:
            await target.close()
    finally:
        await source.close()
    for line in copied.lines():
        say(line)
    say(f"done: point state: at {target_spec} and start bridge; its first sweep diffs against "
        "the copied items (no new-event storm) and delivers the pending events")
    return copied


async def leases(config: BridgeConfig, *, as_json: bool = False,
                 say: Callable[[str], None] = print) -> int:
    """Who owns each work unit now (the config's PostgreSQL state)."""
    store = store_from_spec("postgres", config, must_exist=True)
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        rows = await lease_rows(store)
    finally:
        await store.close()
    listed = [{"unit": r.unit, "owner": r.owner if r.expires_in and r.expires_in > 0 else None,
               "token": r.token,
               "expires_in": None if r.expires_in is None else round(r.expires_in, 1),
               "acquired_at": r.acquired_at.isoformat(timespec="seconds")
               if r.acquired_at else None} for r in rows]
    if as_json:
        say(json.dumps(listed, indent=2))
        return 0
    for row in listed:
        owner = row["owner"] or "(free)"
        left = f"  expires in {row['expires_in']:.0f} s" if row["owner"] else ""
        say(printable(f"{row['unit']}  owner={owner}  token={row['token']}{left}"))
    if not listed:
        say("no work units yet (no replica has started against this database)")
    return 0


async def state_command(what: str, config: BridgeConfig, source: str | None,
                        target: str | None, *, as_json: bool = False) -> int:
    """`bridge state migrate` and `bridge state leases`."""
    if what == "leases":
        return await leases(config, as_json=as_json)
    if not source or not target:
        raise SpecError("--from and --to are both required, e.g. --from sqlite:PATH --to postgres")
    await migrate(config, source, target)
    return 0


__all__ = ["SpecError", "StoreError", "leases", "migrate", "state_command", "store_from_spec"]
