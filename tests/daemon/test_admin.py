"""The admin server of a running daemon over real HTTP: liveness, readiness with per-scope
and per-sink detail, metrics that move as sweeps and deliveries happen, and the bearer token."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bridge.sim.faults import Fault
from tests.daemon._http import get, scrape, series, value, wait_metrics
from tests.daemon.conftest import StartDaemon, Vendor, daemon_config, random_secret
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until


async def wait_ready(base: str, token: str | None, predicate: Any, what: str,
                     timeout: float = 15.0) -> tuple[int, dict[str, Any]]:
    """Poll /readyz until `predicate(status, body)`."""
    last: tuple[int, dict[str, Any]] = (0, {})

    async def showing() -> tuple[int, dict[str, Any]] | None:
        nonlocal last
        last = await get(f"{base}/readyz", token)
        return last if predicate(*last) else None

    try:
        return await wait_until(showing, timeout, f"/readyz showing {what}", every=0.05)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last: {last}") from None


async def test_endpoints_and_metrics_follow_sweeps_and_deliveries(
    tmp_path: Path, vendor: Vendor, receiver: Receiver, start_daemon: StartDaemon
) -> None:
    token = random_secret("adm_", 32)
    world = vendor.world
    first = {world.add_finding()["id"] for _ in range(5)}
    config = daemon_config(tmp_path, vendor, receiver.url)
    config["admin"] = {"port": 0, "token": token}
    config["sinks"][0]["max_attempts"] = 1000  # this test wants a backlog, not dead letters
    daemon = await start_daemon(config)
    base = await daemon.admin_url()

    # /healthz is open; everything else wants the token.
    status, body = await get(f"{base}/healthz")
    assert status == 200 and body["status"] == "ok"
    for path in ("/readyz", "/metrics"):
        assert (await get(f"{base}{path}"))[0] == 401
        assert (await get(f"{base}{path}", "adm_wrong"))[0] == 401

    await receiver.wait_for(lambda r: len(r.received) >= 5)
    assert {r.body["key"] for r in receiver.received} == first
    before = await wait_metrics(
        base, lambda m: value(m, "bridge_deliveries_total", sink="hook", outcome="ok") == 5
        and value(m, "bridge_outbox_depth", sink="hook") == 0
        and value(m, "bridge_items", source="scanorbit", kind="finding", state="active") == 5,
        "5 delivered, an empty outbox and 5 active items", token)
    assert value(before, "bridge_sweeps_total", source="scanorbit", outcome="complete") >= 1
    assert value(before, "bridge_sweep_duration_seconds_count", source="scanorbit") >= 1
    assert value(before, "bridge_api_requests_total", vendor="scanorbit", status="200") >= 2
    last_ok = value(before, "bridge_last_successful_sweep_timestamp_seconds", source="scanorbit")
    assert time.time() - 30 < last_ok <= time.time()
    # Bounded labels: names from the config and fixed words, never item ids.
    for labels in series(before, "bridge_items"):
        assert labels == {"source": "scanorbit", "kind": "finding", "state": labels["state"]}
    assert not any(i in json.dumps(sorted(map(str, before))) for i in first)

    status, ready = await get(f"{base}/readyz", token)
    assert status == 200 and ready["status"] == "ready", ready
    scope = ready["sources"]["scanorbit"]
    assert scope["complete"] is True and scope["error"] is None and not scope["stale"]
    assert scope["last_sweep_age"] is not None and scope["last_sweep_age"] < 10
    assert ready["sinks"]["hook"] == {"healthy": True, "state": "ok", "error": None,
                                      "next_attempt_in": None, "depth": 0, "oldest_age": 0.0}

    # The receiver fails: retries count up, the queue grows, the sink turns unhealthy (and
    # the process stays ready: restarting it would not fix the receiver).
    receiver.mode = 503
    failing = {world.add_finding()["id"] for _ in range(3)}
    backlog = await wait_metrics(
        base, lambda m: value(m, "bridge_outbox_depth", sink="hook") == 3
        and value(m, "bridge_deliveries_total", sink="hook", outcome="retry") > 0
        and value(m, "bridge_outbox_oldest_age_seconds", sink="hook") > 0
        # Item counts are refreshed on their own poke after the sweep's commit, so a scrape
        # can show the new queue a moment before the new counts: wait for both.
        and value(m, "bridge_items", source="scanorbit", kind="finding", state="active") == 8,
        "3 queued deliveries being retried and 8 active items", token)
    assert value(backlog, "bridge_sweeps_total", source="scanorbit", outcome="complete") > \
        value(before, "bridge_sweeps_total", source="scanorbit", outcome="complete")
    status, ready = await wait_ready(base, token, lambda s, b: not b["sinks"]["hook"]["healthy"],
                                     "the sink unhealthy")
    assert status == 200 and ready["status"] == "degraded"
    assert "503" in ready["sinks"]["hook"]["error"]
    assert ready["sinks"]["hook"]["state"] == "failing"
    assert ready["sinks"]["hook"]["next_attempt_in"] is not None
    assert any(r.startswith("sink hook: failing") for r in ready["reasons"])

    # It recovers: everything queued arrives, the queue empties, the sink is healthy again.
    receiver.mode = "ok"
    await receiver.wait_for(lambda r: {x.body["key"] for x in r.received} >= failing)
    after = await wait_metrics(
        base, lambda m: value(m, "bridge_outbox_depth", sink="hook") == 0
        and value(m, "bridge_deliveries_total", sink="hook", outcome="ok") == 8,
        "the backlog delivered", token)
    assert value(after, "bridge_outbox_oldest_age_seconds", sink="hook") == 0
    status, ready = await wait_ready(base, token, lambda s, b: b["sinks"]["hook"]["healthy"],
                                     "the sink healthy again")
    assert ready["status"] == "ready", ready

    # An incomplete sweep shows in /readyz with its reason, and in the metrics.
    world.faults.add(Fault(kind="status", status=500, path="/findings$", times=-1))
    status, ready = await wait_ready(
        base, token, lambda s, b: b["sources"]["scanorbit"]["complete"] is False,
        "an incomplete sweep")
    notes = ready["sources"]["scanorbit"]["notes"]
    assert status == 200 and any("page 1" in n and "500" in n for n in notes), notes
    m = await scrape(base, token)
    assert value(m, "bridge_sweeps_total", source="scanorbit", outcome="incomplete") >= 1
    assert value(m, "bridge_api_requests_total", vendor="scanorbit", status="500") >= 1
    # Every line of that sweep carries its run id; its outcome line adds the stored sweep id.
    done = await daemon.wait_log("sweep_done", where=lambda r: r["outcome"] == "incomplete")
    retries = [r for r in daemon.log_lines() if r["event"] == "vendor_retry"
               and r.get("sweep_run") == done["sweep_run"]]
    assert retries and all(r["source"] == r["scope"] == "scanorbit" for r in retries), retries
    assert isinstance(done["sweep_id"], int)
    # Delivery lines name the events they are about.
    failed = await daemon.wait_log("delivery_failed")
    assert set(failed["event_ids"]) <= set(receiver.delivered_ids()) and failed["sink"] == "hook"
    assert await daemon.stop() == 0


async def test_readyz_is_503_with_a_reason_when_every_scope_is_stale(
    tmp_path: Path, vendor: Vendor, start_daemon: StartDaemon
) -> None:
    vendor.world.add_finding()
    vendor.world.revoke(vendor.key)  # every sweep fails with 401
    daemon = await start_daemon(daemon_config(tmp_path, vendor))
    base = await daemon.admin_url()
    _, ready = await wait_ready(base, None, lambda s, b: s == 503, "503", timeout=15)
    assert ready["status"] == "not_ready" and ready["ready"] is False
    assert ready["reasons"][0] == "every source scope is stale (1 of 1)", ready["reasons"]
    scope = ready["sources"]["scanorbit"]
    assert scope["stale"] and scope["last_complete_age"] is None
    assert "401" in scope["error"], scope
    assert vendor.key not in json.dumps(ready)
    assert (await get(f"{base}/healthz"))[0] == 200  # alive, just not useful
    m = await scrape(base)
    assert value(m, "bridge_sweeps_total", source="scanorbit", outcome="failed") >= 3
    assert value(m, "bridge_api_requests_total", vendor="scanorbit", status="401") >= 3
    assert await daemon.stop() == 0


async def test_events_total_counts_events_by_type(
    tmp_path: Path, vendor: Vendor, start_daemon: StartDaemon
) -> None:
    world = vendor.world
    ids = [world.add_finding()["id"] for _ in range(4)]
    daemon = await start_daemon(daemon_config(tmp_path, vendor))
    base = await daemon.admin_url()
    await wait_metrics(base, lambda m: value(m, "bridge_deliveries_total", sink="events",
                                             outcome="ok") == 4, "4 deliveries")
    world.resolve(ids[0])
    m = await wait_metrics(base, lambda m: value(m, "bridge_deliveries_total", sink="events",
                                                 outcome="ok") == 5, "the resolution delivered")
    assert await daemon.stop() == 0
    assert value(m, "bridge_events_total", source="scanorbit", type="new") == 4
    assert value(m, "bridge_events_total", source="scanorbit", type="resolved") == 1
