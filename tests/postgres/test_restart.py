"""PostgreSQL restarting under a running `bridge run` (a real process, the real server stopped
and started on this machine): sweeps meanwhile fail as *failed* and resolve nothing, deliveries
wait in the outbox, `/readyz` says why, and once the server is back the pool reconnects and
everything the vendor changed meanwhile arrives, once."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld
from tests.conftest import base_config, require_binary, scanorbit_source
from tests.postgres.conftest import delivered
from tests.support.daemon import DaemonProcess
from tests.support.postgres import PgSchema, PrivateServer, new_schema_name
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
DEADLINE = 60.0  # generous: a healthy run meets each condition in a second or two


@pytest.fixture
async def server() -> AsyncIterator[PrivateServer]:
    """A server of this test's own: stopping the suite's shared one would fail the tests
    running beside this one."""
    bindir = PrivateServer.find_bindir()
    if bindir is None:
        require_binary("initdb")  # fails under CI=true, skips otherwise
        raise AssertionError("unreachable")
    found = await PrivateServer.create(bindir)
    try:
        yield found
    finally:
        await found.destroy()


async def readyz(admin: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{admin}/readyz") as response:
        body: dict[str, Any] = await response.json()
        return body


async def test_a_restart_mid_run_fails_sweeps_holds_deliveries_and_loses_nothing(
        tmp_path: Path, server: PrivateServer, world: tuple[ScanOrbitWorld, RunningSim]) -> None:
    w, sim = world
    pg = PgSchema(server.dsn, new_schema_name())
    findings = [w.add_finding()["id"] for _ in range(6)]
    cfg = base_config(tmp_path, [scanorbit_source(sim.url, interval=1, full_resweep_interval=0,
                                                  resolve_after_misses=1)],
                      state=pg.config(connect_timeout=2, statement_timeout=5))
    cfg["log"] = {"format": "json"}
    cfg["admin"] = {"enabled": True, "host": "127.0.0.1", "port": 0}
    cfg["sinks"][0].update(backoff_initial=0.05, backoff_max=0.5)
    events = tmp_path / "events.jsonl"
    daemon = await DaemonProcess(cfg, tmp_path).start()
    try:
        admin = await daemon.admin_url(DEADLINE)
        await wait_until(lambda: len(delivered(events)) >= 6, DEADLINE, "the first sweep")
        async with server.outage():
            mark = daemon.mark()
            w.resolve(findings[0])
            added = w.add_finding()["id"]
            await daemon.wait_log("sweep_not_committed", DEADLINE, since=mark)
            await daemon.wait_log("sink_store_failed", DEADLINE, since=mark)

            async def says_why() -> dict[str, Any] | None:
                body = await readyz(admin)
                return body if any("state store" in r for r in body["reasons"]) else None

            body = await wait_until(says_why, DEADLINE, "/readyz naming the state store")
            scope = next(iter(body["sources"].values()))
            assert "state store" in scope["error"] and "127.0.0.1" in scope["error"]
            assert len(delivered(events)) == 6  # nothing resolved or created meanwhile
        # The server is back: the same process carries on without a restart.
        await wait_until(lambda: {(e["type"], e["key"]) for e in delivered(events)} >= {
            ("resolved", findings[0]), ("new", added)}, DEADLINE, "the changes delivered")
        got = delivered(events)
        distinct = {e["id"]: e for e in got}
        assert Counter(e["type"] for e in distinct.values()) == {"new": 7, "resolved": 1}, got
        # An acknowledgement does not wait for the server's disk (bridge/store/postgres/
        # store.py): the batch acknowledged just before the crash may be delivered again,
        # with the same ids. Nothing else is.
        repeated = [e for e in got if got.count(e) > 1]
        assert all(e["type"] == "new" and e["key"] in findings for e in repeated), repeated
        assert not [e for e in got if e["type"] == "resolved" and e["key"] != findings[0]]
        lines = daemon.log_lines(mark)
        assert not [ln for ln in lines if ln.get("event") == "state_store_corrupt"]
        assert "Traceback" not in daemon.logs()
        body = await readyz(admin)
        assert body["store"]["ok"]
        # The one replica owns every unit, and says so (/readyz, /metrics).
        scope = next(iter(body["sources"]))
        assert set(body["units"]["owned"]) == {f"scope:{scope}", "sink:events"}
        async with aiohttp.ClientSession() as http, http.get(f"{admin}/metrics") as response:
            metrics = await response.text()
        assert 'bridge_unit_owned{unit="sink:events"} 1.0' in metrics
    finally:
        code = await daemon.stop()
    assert code == 0, daemon.logs()[-3000:]
