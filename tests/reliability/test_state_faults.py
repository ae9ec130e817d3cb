"""The state store in trouble: a full disk, a read-only state directory, a corrupt file.

Each must give one clear error (no traceback, nothing misleading), never corrupt the state,
and lose nothing once the trouble is gone. The daemon is the real `bridge run` process; the
full disk is a file size limit on it (RLIMIT_FSIZE fails writes with EFBIG through the same
paths ENOSPC takes), the read-only directory applies to root because the child runs without
the capabilities that bypass file permissions.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from bridge.config import parse_config
from bridge.health import Health
from bridge.outbox import ACK_WINDOW_BATCHES
from bridge.pipeline import Pipeline
from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld, make_app
from bridge.store.base import StoreCorruptError, SweepCommit
from bridge.store.sqlite import SQLiteStore, _transaction
from tests.conftest import SIM_SCANORBIT_KEY, base_config, scanorbit_source
from tests.support.chaos import HookReceiver, StateView
from tests.support.daemon import DaemonProcess, run_cli
from tests.support.limited import LimitedDaemon, file_size_limit
from tests.support.waiting import wait_until

# Long scenario runs: scheduled first (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# How long a condition may take before it is a failure. Generous on purpose: these wait for
# real processes on a machine that may be loaded (CI on 2 busy cores); a healthy run meets
# each condition in a few seconds and never waits for the deadline.
DEADLINE = 150.0
BATCH = 10


@pytest.fixture
async def world() -> AsyncIterator[tuple[ScanOrbitWorld, RunningSim]]:
    w = ScanOrbitWorld(api_keys={SIM_SCANORBIT_KEY}, seed=5, rate_limit=100_000)
    async with RunningSim(make_app(w), shutdown_timeout=0.2) as sim:
        yield w, sim


@pytest.fixture
async def hook() -> AsyncIterator[HookReceiver]:
    h = HookReceiver()
    await h.start()
    yield h
    await h.stop()


def config(tmp_path: Path, url: str, hook: HookReceiver) -> dict[str, Any]:
    cfg = base_config(tmp_path, [scanorbit_source(url, interval=1, full_resweep_interval=0)])
    cfg["log"] = {"format": "json"}
    cfg["sinks"] = [
        {"name": "events", "type": "file", "path": str(tmp_path / "events.jsonl"),
         "batch_size": BATCH, "backoff_initial": 0.05, "backoff_max": 0.5},
        {"name": "hook", "type": "webhook", "url": hook.url, "batch_size": BATCH,
         "backoff_initial": 0.05, "backoff_max": 0.5, "max_attempts": 10_000},
    ]
    cfg["routes"] = {"sinks": ["events", "hook"]}
    return cfg


def state_of(tmp_path: Path) -> Path:
    return tmp_path / "state" / "bridge.db"


def file_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]  # fails on a torn line


async def settle(daemon: DaemonProcess, tmp_path: Path, hook: HookReceiver, n: int) -> None:
    """Wait until `n` distinct events reached the webhook and nothing is queued any more."""
    view = StateView(state_of(tmp_path))

    def died() -> str | None:
        proc = daemon.proc
        return f"daemon exited:\n{daemon.logs()[-4000:]}" if proc and proc.returncode is not None \
            else None

    try:
        await wait_until(lambda: len({r.id for r in hook.received}) >= n
                       and not any(view.depth().values()), DEADLINE, f"{n} events delivered",
                       alive=died)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; received {len({r.id for r in hook.received})}, queued "
                             f"{view.depth()}; daemon log:\n{daemon.logs()[-4000:]}") from None


async def start_settled(tmp_path: Path, world: tuple[ScanOrbitWorld, RunningSim],
                        hook: HookReceiver, findings: int) -> tuple[dict[str, Any], DaemonProcess]:
    """A running daemon that has delivered `findings` new findings everywhere."""
    w, sim = world
    for _ in range(findings):
        w.add_finding()
    cfg = config(tmp_path, sim.url, hook)
    daemon = await DaemonProcess(cfg, tmp_path).start()
    await settle(daemon, tmp_path, hook, findings)
    return cfg, daemon


async def test_a_full_disk_is_reported_keeps_the_daemon_alive_and_loses_nothing(
    tmp_path: Path, world: tuple[ScanOrbitWorld, RunningSim], hook: HookReceiver
) -> None:
    w, _ = world
    cfg, daemon = await start_settled(tmp_path, world, hook, 40)
    assert await daemon.stop() == 0

    # The disk fills up: the state file and the event file may grow by a few KB at most.
    state, events = state_of(tmp_path), tmp_path / "events.jsonl"
    limit = state.stat().st_size + 48_000
    with events.open("a") as f:  # valid JSON lines, so only the room left matters
        while events.stat().st_size < limit - 3_000:
            f.write(json.dumps({"padding": "x" * 1000}) + "\n")
            f.flush()
    full = LimitedDaemon(cfg, tmp_path, preexec=file_size_limit(limit))
    mark = full.mark()
    # First a few new findings the state still has room for: their events commit and the file
    # sink fails to append them. Then the estate keeps growing until sweep commits fail too.
    # In that order, because a sweep that finds too much at once (a slow machine sweeps
    # seldom) never commits, and nothing would be left to deliver.
    for _ in range(BATCH):
        w.add_finding()
    await full.start()
    try:
        def logged() -> Counter[str | None]:
            return Counter(line.get("event") for line in full.log_lines(mark))

        def died() -> str | None:
            return None if full.proc and full.proc.returncode is None \
                else f"daemon died:\n{full.logs()[-4000:]}"

        async def grow() -> bool:
            for _ in range(10):
                w.add_finding()
            return logged()["sweep_not_committed"] >= 3

        try:
            await wait_until(lambda: logged()["delivery_failed"] > 0, DEADLINE,
                             "deliveries failing for lack of room", every=0.1, alive=died)
            await wait_until(grow, DEADLINE, "commits failing for lack of room", every=0.3,
                             alive=died)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; logged {dict(logged())}:\n{full.logs()[-6000:]}") \
                from None
        lines = full.log_lines(mark)
        commit_errors = [ln["error"] for ln in lines if ln.get("event") == "sweep_not_committed"]
        assert all("state commit failed" in e and "rollback" not in e for e in commit_errors), \
            commit_errors
        assert any("disk I/O error" in e or "disk is full" in e for e in commit_errors)
        file_errors = [ln["error"] for ln in lines if ln.get("event") == "delivery_failed"
                       and ln.get("sink") == "events"]
        assert any("File too large" in e for e in file_errors), file_errors
        assert "Traceback" not in full.logs()
        assert full.proc is not None and full.proc.returncode is None  # still running
    finally:
        await full.kill()

    # Room again: everything that was ever upstream reaches both sinks, the state is sound.
    daemon = await DaemonProcess(cfg, tmp_path).start()
    try:
        await settle(daemon, tmp_path, hook, len(w.findings))
    finally:
        assert await daemon.stop() == 0
    assert {r.key for r in hook.received if r.type == "new"} == set(w.findings)
    delivered = [line for line in file_lines(events) if "id" in line]  # no torn line anywhere
    assert {line["key"] for line in delivered} == set(w.findings)
    # The promise: a delivery whose acknowledgement cannot be written is acknowledged again,
    # not sent again, however long the disk stays full. Only what was delivered but not yet
    # acknowledged when the full daemon was killed is sent twice: at most the acknowledgement
    # window per sink (the batches sent while a slow acknowledgement was on its way before it
    # failed), and never more than once more, however many times the worker retried.
    received = {"hook": [r.id for r in hook.received], "events": [ln["id"] for ln in delivered]}
    extra = {sink: len(ids) - len(set(ids)) for sink, ids in received.items()}
    counts = {sink: {"deliveries": len(ids), "events": len(set(ids)),
                     "most copies": max(Counter(ids).values())} for sink, ids in received.items()}
    assert all(n <= ACK_WINDOW_BATCHES * BATCH for n in extra.values()), (extra, counts)
    assert all(c["most copies"] <= 2 for c in counts.values()), counts
    code, out, err = await run_cli("state", "check", "--config", str(daemon.config_path))
    assert code == 0 and out.strip() == "state OK", out + err


def test_an_error_that_ended_the_transaction_is_not_masked_by_the_rollback() -> None:
    """After an I/O error or a full disk SQLite rolls back by itself; our ROLLBACK then fails
    with "cannot rollback - no transaction is active", which used to replace the real error
    in the log ("state commit failed: cannot rollback...")."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"), \
            _transaction(conn):
        conn.execute("ROLLBACK")  # what SQLite does on SQLITE_FULL
        raise sqlite3.OperationalError("database or disk is full")
    with _transaction(conn):  # and the connection is usable afterwards
        conn.execute("CREATE TABLE t (x)")
    assert not conn.in_transaction


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_read_only_state_directory_is_refused_clearly_and_left_intact(
    tmp_path: Path, world: tuple[ScanOrbitWorld, RunningSim], hook: HookReceiver
) -> None:
    cfg, daemon = await start_settled(tmp_path, world, hook, 20)
    assert await daemon.stop() == 0
    state = state_of(tmp_path)
    before = digest(state)
    path = str(daemon.config_path)

    state.parent.chmod(0o500)  # e.g. a read-only mount, or the wrong owner after a restore
    try:
        for args in (("run", "--config", path), ("state", "check", "--config", path)):
            code, out, err = await run_cli(*args, file_permissions=True)
            lines = err.splitlines()
            assert code == 1 and len(lines) == 1 and "Traceback" not in out + err, err
            assert lines[0].startswith(f"bridge: state store: state file {state} cannot be "
                                       "written"), err
            assert str(state.parent) in lines[0] and "not damaged" in lines[0], err
            assert "restore a backup" not in lines[0] and "start fresh" not in lines[0], err
    finally:
        state.parent.chmod(0o700)
    state.chmod(0o400)  # the file itself read-only: the same kind of message
    try:
        code, _, err = await run_cli("run", "--config", path, file_permissions=True)
        assert code == 1 and len(err.splitlines()) == 1 and "Permission denied" in err, err
    finally:
        state.chmod(0o600)
    assert digest(state) == before

    # Writable again: it carries on where it was, nothing is reported twice.
    view = StateView(state)
    received = len(hook.received)
    since = time.time()
    daemon = await DaemonProcess(cfg, tmp_path).start()
    try:
        await wait_until(lambda: view.complete_sweeps_since("scanorbit", since) >= 2, DEADLINE,
                       "two complete sweeps", every=0.05)
    finally:
        assert await daemon.stop() == 0
    assert len(hook.received) == received


def corrupt_a_table(state: Path, table: str) -> None:
    """Overwrite the b-tree header of `table`'s root page: a torn write in the middle of the
    file, the file header and every other page left intact."""
    with sqlite3.connect(state) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
                          ).fetchone()[0]
    db.close()
    assert root > 1
    with state.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * 64)


async def test_a_corrupt_state_file_stops_startup_and_a_backup_restores_it(
    tmp_path: Path, world: tuple[ScanOrbitWorld, RunningSim], hook: HookReceiver
) -> None:
    cfg, daemon = await start_settled(tmp_path, world, hook, 20)
    path = str(daemon.config_path)
    backup = tmp_path / "backups" / "bridge.db"
    code, _, err = await run_cli("state", "backup", "--dest", str(backup), "--config", path)
    assert code == 0, err
    assert await daemon.stop() == 0
    state = state_of(tmp_path)
    corrupt_a_table(state, "items")

    for args in (("run", "--config", path), ("state", "check", "--config", path),
                 ("state", "items", "--config", path)):
        code, out, err = await run_cli(*args)
        lines = err.splitlines()
        assert code == 1 and len(lines) == 1 and "Traceback" not in out + err, err
        assert lines[0].startswith(f"bridge: state store: state file {state} "), err
        assert ("corrupt" in lines[0] or "malformed" in lines[0]) and "backup" in lines[0], err

    shutil.copyfile(backup, state)
    state.chmod(0o600)
    code, out, err = await run_cli("state", "check", "--config", path)
    assert code == 0 and out.strip() == "state OK", out + err
    received = len(hook.received)
    since = time.time()
    daemon = await DaemonProcess(cfg, tmp_path).start()
    try:
        await wait_until(lambda: StateView(state).complete_sweeps_since("scanorbit", since) >= 2,
                       DEADLINE, "two complete sweeps", every=0.05)
    finally:
        assert await daemon.stop() == 0
    assert len(hook.received) == received  # the restored state knew every item


class CorruptOnCommit(SQLiteStore):
    """A store that finds its file damaged mid-run, as SQLite does when a page read during a
    commit fails its checks (the damage itself is provoked above, at startup)."""

    async def commit_sweep(self, commit: SweepCommit) -> int:
        raise StoreCorruptError(f"state file {self.path} is corrupt (database disk image is "
                                "malformed); restore a backup")


async def test_state_found_corrupt_while_running_stops_instead_of_writing_on(
    tmp_path: Path, world: tuple[ScanOrbitWorld, RunningSim], hook: HookReceiver
) -> None:
    w, sim = world
    w.add_finding()
    parsed = parse_config(config(tmp_path, sim.url, hook))
    store = CorruptOnCommit(state_of(tmp_path))
    health = Health()
    fatal: list[str] = []
    await store.open()
    health.store_opened(True)
    health.config_loaded("bridge.yaml")
    pipeline = Pipeline.build(parsed, store, health)
    pipeline.on_fatal = fatal.append
    try:
        source = next(iter(pipeline.sources.values()))
        with structlog.testing.capture_logs() as logs:
            assert await pipeline.sweep(source, source.scopes[0]) is None
    finally:
        await pipeline.stop(1.0)
        await store.close()
    assert len(fatal) == 1 and "corrupt" in fatal[0]
    ready, detail = health.ready()
    assert not ready and any("corrupt" in r for r in detail["reasons"]), detail
    assert [e["event"] for e in logs if e["log_level"] == "critical"] == ["state_store_corrupt"]
