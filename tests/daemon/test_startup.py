"""`bridge run` refuses to start, with one clear message and no traceback, when its state or
config cannot be used; `bridge state backup` copies the state of a running daemon."""

from __future__ import annotations

import json
import socket
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bridge.store.sqlite import migrations
from tests.daemon.conftest import StartDaemon, Vendor, daemon_config
from tests.support.daemon import run_cli
from tests.support.waiting import wait_until

LATEST = migrations()[-1][0]


def corrupt(state: Path) -> None:
    state.write_bytes(b"\x00garbage, not SQLite\xff" * 512)
    state.chmod(0o600)  # as bridge creates it (else it tightens the mode and says so)


def from_the_future(state: Path) -> None:
    with sqlite3.connect(state) as db:
        db.execute("PRAGMA user_version = 99")
    state.chmod(0o600)


def unreadable(state: Path) -> None:
    state.write_bytes(b"")
    state.chmod(0)


def a_directory(state: Path) -> None:
    state.mkdir()


STATE_PROBLEMS: dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt": (corrupt, "is not a usable SQLite database: file is not a database"),
    "newer schema": (from_the_future, "has schema version 99, newer than this bridge "
                                      f"understands ({LATEST}); run a newer bridge"),
    "unreadable": (unreadable, "Permission denied"),
    "a directory": (a_directory, "Is a directory"),
}


@pytest.mark.parametrize("problem", list(STATE_PROBLEMS))
async def test_unusable_state_stops_startup_with_one_clear_line(
    tmp_path: Path, vendor: Vendor, problem: str
) -> None:
    make, message = STATE_PROBLEMS[problem]
    config = daemon_config(tmp_path, vendor)
    state = Path(config["state"]["path"])
    state.parent.mkdir(parents=True)
    make(state)
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out, err = await run_cli("run", "--config", str(path), file_permissions=True)
    assert code == 1, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in out + err, err
    assert lines[0].startswith("bridge: state store: ") and str(state) in lines[0], err
    assert message in lines[0], err


async def test_bad_config_stops_startup_naming_the_yaml_path(
    tmp_path: Path, vendor: Vendor
) -> None:
    config = daemon_config(tmp_path, vendor)
    config["sources"][0]["interval"] = "often"
    config["sinks"][0]["fsync"] = "sometimes"
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = await run_cli("run", "--config", str(path))
    assert code == 2 and "Traceback" not in err, err
    assert err.splitlines()[0] == f"{path}: invalid configuration"
    assert "  sources[0].interval: Input should be a valid number" in err
    assert "  sinks[0].fsync: Input should be 'batch' or 'never'" in err
    code, _, err = await run_cli("run", "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read: No such file or directory" in err, err


async def test_an_admin_port_in_use_stops_startup(tmp_path: Path, vendor: Vendor) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = daemon_config(tmp_path, vendor)
        config["admin"]["port"] = taken.getsockname()[1]
        path = tmp_path / "bridge.yaml"
        path.write_text(yaml.safe_dump(config))
        code, _, err = await run_cli("run", "--config", str(path))
    assert code == 2 and "Traceback" not in err, err
    assert f"admin: cannot listen on 127.0.0.1:{config['admin']['port']}" in err, err


async def test_state_backup_while_the_daemon_runs(
    tmp_path: Path, vendor: Vendor, start_daemon: StartDaemon
) -> None:
    world = vendor.world
    for _ in range(30):
        world.add_finding()
    daemon = await start_daemon(daemon_config(tmp_path, vendor))
    events = tmp_path / "events.jsonl"
    await wait_until(lambda: events.exists() and len(events.read_text().splitlines()) == 30, 15,
                     "30 events delivered")
    dest = tmp_path / "backups" / "bridge-copy.db"
    code, out, err = await run_cli("state", "backup", "--dest", str(dest),
                                   "--config", str(daemon.config_path))
    assert code == 0, err
    assert out.strip() == f"backup written to {dest}"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert not dest.with_name(dest.name + ".tmp").exists()
    with sqlite3.connect(dest) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("PRAGMA user_version").fetchone() == (LATEST,)
        assert copy.execute("SELECT COUNT(*) FROM items").fetchone() == (30,)
        assert copy.execute("SELECT COUNT(*) FROM sweeps").fetchone()[0] >= 1

    # The daemon never noticed: it keeps sweeping and delivering.
    world.add_finding()
    await wait_until(lambda: len(events.read_text().splitlines()) == 31, 15, "a later event")
    code, out, _ = await run_cli("state", "items", "--json", "--config", str(daemon.config_path),
                                 "--limit", "100")
    assert code == 0 and len(json.loads(out)) == 31
    assert await daemon.stop() == 0
