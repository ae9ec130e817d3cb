"""The admin server over real HTTP: health, readiness, metrics and the bearer token."""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from structlog.testing import capture_logs

from bridge import metrics
from bridge.admin import AdminConfig, AdminServer, is_loopback
from bridge.admin_guard import ACCEPT_BATCH, MIN_CONNECTIONS, LoopErrorLog, connection_limit
from bridge.health import Health, SinkVerdict
from tests.support.waiting import wait_until

TOKEN = "admin-" + uuid.uuid4().hex


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def server() -> AsyncIterator[AdminServer]:
    health = Health()
    admin = AdminServer(AdminConfig(port=0), health)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.stop()


def url(admin: AdminServer, path: str) -> str:
    return f"http://127.0.0.1:{admin.port}{path}"


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


async def test_healthz(server: AdminServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url(server, "/healthz")) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok" and body["loop_lag"] < 5


async def test_healthz_reports_a_stalled_loop(http: aiohttp.ClientSession) -> None:
    admin = AdminServer(AdminConfig(port=0), Health(), max_lag=0.2, tick=0.05)
    await admin.start()
    try:
        time.sleep(0.5)  # noqa: ASYNC251  (under test: a blocking call stalls the loop)
        async with http.get(url(admin, "/healthz")) as resp:
            assert resp.status == 503
            assert "event loop lagged" in (await resp.json())["reason"]
        async def healthy() -> bool:  # once the ticker runs on time again
            async with http.get(url(admin, "/healthz")) as resp:
                return resp.status == 200

        await wait_until(healthy, 5, "healthz recovered", every=0.02)
    finally:
        await admin.stop()


async def test_readyz_503_with_reasons_then_200(
    server: AdminServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(url(server, "/readyz")) as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["ready"] is False
    assert any("state store not open" in r for r in body["reasons"])

    server.health.store_opened(True)
    server.health.config_loaded("/etc/bridge/bridge.yaml")
    server.health.expect_scope("so-prod", "so-prod", 300)
    server.health.sweep_finished("so-prod", source="so-prod", complete=True, skipped=False,
                                 error=None)
    server.health.expect_sink("jira")
    server.health.sink_verdict("jira", SinkVerdict("failing", "HTTP 503"))
    server.health.sink_queue("jira", 5, 12.0)
    async with http.get(url(server, "/readyz")) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "degraded"
    assert body["sources"]["so-prod"]["complete"] is True
    assert body["sinks"]["jira"]["depth"] == 5
    assert body["reasons"] == ["sink jira: failing: HTTP 503"]


async def test_metrics_change_as_things_happen(
    server: AdminServer, http: aiohttp.ClientSession
) -> None:
    source = f"ops-{uuid.uuid4().hex[:8]}"
    metrics.SWEEPS.labels(source, "complete").inc()
    metrics.OUTBOX_DEPTH.labels(source).set(7)
    async with http.get(url(server, "/metrics")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        before = await resp.text()
    assert "# TYPE bridge_sweeps_total counter" in before
    assert sample(before, "bridge_sweeps_total", {"source": source, "outcome": "complete"}) == 1
    assert sample(before, "bridge_outbox_depth", {"sink": source}) == 7

    metrics.SWEEPS.labels(source, "complete").inc(2)
    metrics.SWEEP_SECONDS.labels(source).observe(1.5)
    metrics.OUTBOX_DEPTH.labels(source).set(0)
    async with http.get(url(server, "/metrics")) as resp:
        after = await resp.text()
    assert sample(after, "bridge_sweeps_total", {"source": source, "outcome": "complete"}) == 3
    assert sample(after, "bridge_sweep_duration_seconds_count", {"source": source}) == 1
    assert sample(after, "bridge_outbox_depth", {"sink": source}) == 0


async def test_token_required_except_healthz(http: aiohttp.ClientSession) -> None:
    admin = AdminServer(AdminConfig(port=0, token=SecretStr(TOKEN)), Health())
    await admin.start()
    try:
        async with http.get(url(admin, "/healthz")) as resp:
            assert resp.status == 200
        for path in ("/readyz", "/metrics"):
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": f"Basic {TOKEN}"},
                            {"Authorization": f"Bearer {TOKEN}x"}):
                async with http.get(url(admin, path), headers=headers) as resp:
                    assert resp.status == 401, (path, headers)
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(url(admin, "/metrics"),
                            headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
            assert "bridge_" in await resp.text()
        async with http.get(url(admin, "/readyz"),
                            headers={"Authorization": f"bearer {TOKEN}"}) as resp:
            assert resp.status == 503  # authorized; just not ready (no store, no config)
    finally:
        await admin.stop()


async def test_warns_when_exposed_without_token() -> None:
    with capture_logs() as logs:
        exposed = AdminServer(AdminConfig(host="0.0.0.0", port=0), Health())
        await exposed.start()
        await exposed.stop()
        guarded = AdminServer(AdminConfig(host="0.0.0.0", port=0, token=SecretStr(TOKEN)),
                              Health())
        await guarded.start()
        await guarded.stop()
    warnings = [e for e in logs if e["event"] == "admin_exposed_without_token"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert TOKEN not in repr(logs)


async def test_lifecycle(http: aiohttp.ClientSession) -> None:
    admin = AdminServer(AdminConfig(port=0), Health())
    with pytest.raises(RuntimeError):
        _ = admin.port
    await admin.start()
    port = admin.port
    assert port > 0
    await admin.start()  # second start is a no-op
    assert admin.port == port
    await admin.stop()
    with pytest.raises(RuntimeError):
        _ = admin.port
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"http://127.0.0.1:{port}/healthz"):
            pass
    await admin.stop()  # idempotent

    disabled = AdminServer(AdminConfig(enabled=False), Health())
    await disabled.start()
    with pytest.raises(RuntimeError):
        _ = disabled.port


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1")
    assert is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("")
    assert not is_loopback("10.0.0.5") and not is_loopback("bridge.internal")


async def healthz_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """The status line of one keep-alive `/healthz` on an open connection."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    return await asyncio.wait_for(reader.readline(), 5)


async def test_at_the_cap_the_oldest_idle_connection_makes_room() -> None:
    admin = AdminServer(AdminConfig(port=0, max_connections=4), Health())
    await admin.start()
    try:
        idle = [await asyncio.open_connection("127.0.0.1", admin.port) for _ in range(4)]
        await wait_until(lambda: admin.open_connections == 4, 5, "4 admitted connections")
        with capture_logs() as logs:
            probe = await asyncio.open_connection("127.0.0.1", admin.port)
            assert (await healthz_on(*probe)).startswith(b"HTTP/1.1 200")
        oldest, _ = idle[0]
        assert await asyncio.wait_for(oldest.read(), 5) == b""  # closed to make room
        for connection in idle[1:]:  # the younger ones still work
            assert (await healthz_on(*connection)).startswith(b"HTTP/1.1 200")
        assert admin.open_connections == 4
        (shed,) = [e for e in logs if e["event"] == "admin_connections_shed"]
        assert shed["limit"] == 4 and shed["shed"] == 1 and shed["refused"] is False
        for _, writer in [*idle, probe]:
            writer.close()
    finally:
        await admin.stop()


def test_the_connection_cap_leaves_most_descriptors_to_the_rest() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ACCEPT_BATCH + 128, hard))
        assert connection_limit(1000) == 32  # a quarter of what one accept batch leaves
        assert connection_limit(8) == 8  # a lower setting is kept
        resource.setrlimit(resource.RLIMIT_NOFILE, (ACCEPT_BATCH + 8, hard))
        assert connection_limit(1000) == MIN_CONNECTIONS
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_loop_errors_are_logged_once_per_kind_and_period() -> None:
    """Out of descriptors, asyncio reports a failed accept up to 128 times per wake-up."""
    handler = LoopErrorLog()
    loop = asyncio.get_running_loop()
    accept = {"message": "socket.accept() out of system resource",
              "exception": OSError(24, "Too many open files"), "socket": "<socket fd=10>"}
    with capture_logs() as logs:
        for _ in range(1000):
            handler(loop, accept)
        handler(loop, {"message": "Task exception was never retrieved",
                       "exception": RuntimeError(f"boom {TOKEN}")})
    assert [e["event"] for e in logs] == ["accept_failed", "event_loop_error"]
    assert logs[0]["error"] == "OSError: [Errno 24] Too many open files"
    assert logs[0]["occurrences"] == 1 and "LimitNOFILE" in logs[0]["hint"]
    assert logs[1]["log_level"] == "error"
