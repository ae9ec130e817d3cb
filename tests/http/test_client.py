"""The one vendor HTTP client, against the simulators over real HTTP (and TLS): rate limits
never exceeded, Retry-After honoured, bounded backoff, timeouts, TLS verification, proxies,
User-Agent, and no credential in any exception, log line or metric."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from prometheus_client import REGISTRY, generate_latest

from bridge import metrics
from bridge.http import (
    HttpConfig,
    HttpContext,
    VendorClient,
    VendorError,
    credential_scope,
)
from bridge.logging import LogConfig, configure_logging
from bridge.net import backoff_delay
from bridge.sim.aether365 import Aether365World
from bridge.sim.aether365 import make_app as make_aether365_app
from bridge.sim.ayliea import SCOPES, AylieaWorld
from bridge.sim.ayliea import make_app as make_ayliea_app
from bridge.sim.common import RunningSim
from bridge.sim.faults import Fault
from bridge.sim.scanorbit import ScanOrbitWorld
from bridge.sim.scanorbit import make_app as make_scanorbit_app
from bridge.sources.aether365 import Aether365Errors
from bridge.sources.ayliea import AylieaErrors
from bridge.version import __version__
from tests.conftest import SIM_AETHER365_KEYS, SIM_AYLIEA_KEY, SIM_SCANORBIT_KEY
from tests.http.conftest import fast, gaps, record_arrivals

KEY_A, KEY_B = SIM_AETHER365_KEYS["contoso"], SIM_AETHER365_KEYS["fabrikam"]


def aether_client(http: HttpContext, url: str, key: str, config: HttpConfig) -> VendorClient:
    return http.client(vendor="aether365", base_url=url,
                       headers={"Authorization": f"Bearer {key}"}, config=config,
                       limit_scope=credential_scope(key), default_per_minute=100.0,
                       errors=Aether365Errors())


@pytest.fixture
async def aether() -> AsyncIterator[tuple[Aether365World, RunningSim, list[Any]]]:
    world = Aether365World(tokens={KEY_A: "tenant-a", KEY_B: "tenant-b"}, rate_limit=100_000)
    app = make_aether365_app(world)
    arrivals = record_arrivals(app)
    async with RunningSim(app) as sim:
        yield world, sim, arrivals


# -- rate limits ----------------------------------------------------------------------------

async def test_rate_limits_are_never_exceeded_over_a_long_run(http: HttpContext) -> None:
    """Every vendor at once, each simulator enforcing 10 requests per 0.25 s window per key
    (or per org) and counting every 429; each client is configured under it (30/s, burst 1:
    at most 8.5 in any window). Several workers share each bucket, as sweeps of one scope do."""
    window: dict[str, Any] = {"rate_limit": 10, "rate_window": 0.25}
    aether = Aether365World(tokens={KEY_A: "tenant-a", KEY_B: "tenant-b"}, **window)
    ayliea = AylieaWorld(keys={SIM_AYLIEA_KEY: SCOPES}, **window)
    scanorbit = ScanOrbitWorld(api_keys={SIM_SCANORBIT_KEY}, **window)
    config = fast(rate_limit_per_minute=1800, burst=1, max_retries=0)
    async with RunningSim(make_aether365_app(aether)) as a_sim, \
            RunningSim(make_ayliea_app(ayliea)) as y_sim, \
            RunningSim(make_scanorbit_app(scanorbit)) as s_sim:
        clients = [
            (aether_client(http, a_sim.url, KEY_A, config), "/tenants/me/policies"),
            (aether_client(http, a_sim.url, KEY_B, config), "/tenants/me/policies"),
            (http.client(vendor="ayliea", base_url=y_sim.url,
                         headers={"X-API-Key": SIM_AYLIEA_KEY}, config=config,
                         limit_scope=credential_scope(SIM_AYLIEA_KEY),
                         default_per_minute=50.0, errors=AylieaErrors()), "/scores"),
            (http.client(vendor="scanorbit", base_url=s_sim.url,
                         headers={"X-API-Key": SIM_SCANORBIT_KEY}, config=config,
                         limit_scope="org", default_per_minute=80.0), "/findings"),
        ]

        async def worker(client: VendorClient, path: str) -> None:
            for _ in range(20):
                await client.get_json(path)

        started = time.monotonic()
        await asyncio.gather(*(worker(c, p) for c, p in clients for _ in range(3)))
        elapsed = time.monotonic() - started
    for world in (aether, ayliea, scanorbit):
        assert world.stats.served_429 == [] and world.stats.rate_limited == 0
    assert aether.stats.requests_total == 120 and ayliea.stats.requests_total == 60
    # 60 requests per bucket at 30/s: about 2 s, and the buckets ran side by side.
    assert 1.8 < elapsed < 3.5


async def test_default_buckets_stay_below_the_documented_limits(http: HttpContext) -> None:
    """A full bucket plus a minute of refill must fit in the vendor's per-minute limit."""
    from bridge.sources.aether365 import Aether365Config
    from bridge.sources.ayliea import AylieaConfig
    from bridge.sources.scanorbit import ScanOrbitConfig

    sources: list[tuple[Any, float]] = [
        (ScanOrbitConfig(name="s", type="scanorbit", api_key=SIM_SCANORBIT_KEY), 100),
        (Aether365Config(name="a", type="aether365", api_key=KEY_A), 120),
        (AylieaConfig(name="y", type="ayliea", api_key=SIM_AYLIEA_KEY), 60),
    ]
    for config, documented in sources:
        config.build(http)
        bucket = list(http.buckets.values())[-1]
        assert bucket.capacity + bucket.rate * 60 <= documented, config.type


async def test_each_key_has_its_own_bucket_and_a_shared_key_shares_one(
    http: HttpContext,
) -> None:
    config = fast()
    a1 = aether_client(http, "http://127.0.0.1:1", KEY_A, config)
    a2 = aether_client(http, "http://127.0.0.1:1", KEY_A, config)
    b = aether_client(http, "http://127.0.0.1:1", KEY_B, config)
    assert a1.limiter is a2.limiter and a1.limiter is not b.limiter
    assert not any(KEY_A in name or KEY_B in name for name in http.buckets)


# -- Retry-After, backoff, timeouts ---------------------------------------------------------

async def test_retry_after_seconds_is_honoured(
    http: HttpContext, aether: tuple[Aether365World, RunningSim, list[Any]]
) -> None:
    world, sim, arrivals = aether
    world.faults.add(Fault(kind="status", status=429, retry_after="1",
                           code="RATE_LIMIT_EXCEEDED", path="/policies$"))
    client = aether_client(http, sim.url, KEY_A, fast())
    body = await client.get_json("/tenants/me/policies")
    assert body["success"] is True
    assert len(arrivals) == 2 and gaps(arrivals)[0] >= 0.99


async def test_retry_after_http_date_is_honoured(
    http: HttpContext, aether: tuple[Aether365World, RunningSim, list[Any]]
) -> None:
    world, sim, arrivals = aether
    # HTTP-dates have whole seconds: the retry must not come before that second, however long
    # the first request took on a busy machine (so the date is judged, not the gap).
    now = datetime.now(UTC)
    when = now.replace(microsecond=0) + timedelta(seconds=3)
    not_before = time.monotonic() + (when - now).total_seconds()
    world.faults.add(Fault(kind="status", status=503, retry_after=format_datetime(when, True),
                           path="/policies$"))
    client = aether_client(http, sim.url, KEY_A, fast())
    await client.get_json("/tenants/me/policies")
    first, retry = arrivals
    assert first.at < not_before - 0.01  # the date was still ahead when the 503 was served
    assert not_before - 0.01 <= retry.at <= not_before + 1.5


async def test_retry_after_pauses_every_caller_of_the_bucket(
    http: HttpContext, aether: tuple[Aether365World, RunningSim, list[Any]]
) -> None:
    world, sim, arrivals = aether
    world.faults.add(Fault(kind="status", status=429, retry_after="1",
                           code="RATE_LIMIT_EXCEEDED", path="/policies$"))
    client = aether_client(http, sim.url, KEY_A, fast())
    await client.get_json("/tenants/me/policies")
    await aether_client(http, sim.url, KEY_A, fast()).get_json("/tenants/me/threats")
    assert [a.path for a in arrivals] == ["/tenants/me/policies"] * 2 + ["/tenants/me/threats"]
    assert arrivals[2].at - arrivals[0].at >= 0.99


async def test_backoff_is_bounded(
    http: HttpContext, aether: tuple[Aether365World, RunningSim, list[Any]]
) -> None:
    world, sim, arrivals = aether
    world.faults.add(Fault(kind="status", status=503, path="/policies$", times=-1))
    client = aether_client(http, sim.url, KEY_A,
                           fast(max_retries=3, backoff_initial=0.02, backoff_max=0.05))
    with pytest.raises(VendorError) as info:
        await client.get_json("/tenants/me/policies")
    assert info.value.kind == "server" and "gave up after 4 attempts" in str(info.value)
    assert len(arrivals) == 4
    assert all(gap < 0.05 + 0.1 for gap in gaps(arrivals))


def test_backoff_delay_has_full_jitter_under_a_cap() -> None:
    for attempt in range(12):
        delays = [backoff_delay(attempt, 0.5, 30.0) for _ in range(200)]
        assert all(0.0 <= d <= min(30.0, 0.5 * 2**attempt) for d in delays)
        assert len(set(delays)) > 1


def test_backoff_delay_after_hours_of_failures_stays_under_its_cap() -> None:
    """A receiver down for hours: thousands of attempts must not overflow the exponent."""
    for attempt in (1_023, 1_024, 100_000):
        assert 0.0 <= backoff_delay(attempt, 0.5, 15.0) <= 15.0


async def test_internal_error_in_a_200_body_is_retried(
    http: HttpContext, aether: tuple[Aether365World, RunningSim, list[Any]]
) -> None:
    world, sim, arrivals = aether
    world.faults.add(Fault(kind="envelope_error", code="INTERNAL_ERROR", path="/policies$"))
    body = await aether_client(http, sim.url, KEY_A, fast()).get_json("/tenants/me/policies")
    assert body["success"] is True and len(arrivals) == 2


async def test_timeout(
    http: HttpContext, aether: tuple[Aether365World, RunningSim, list[Any]]
) -> None:
    world, sim, _ = aether
    world.faults.add(Fault(kind="timeout", delay=5.0, path="/policies$", times=-1))
    client = aether_client(http, sim.url, KEY_A, fast(timeout=0.2, max_retries=0))
    started = time.monotonic()
    with pytest.raises(VendorError) as info:
        await client.get_json("/tenants/me/policies")
    assert info.value.kind == "network" and "timed out after 0.2s" in str(info.value)
    assert time.monotonic() - started < 1.0


# -- TLS, proxy, headers --------------------------------------------------------------------

@pytest.fixture
async def tls_sim(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    world = Aether365World(tokens={KEY_A: "tenant-a"}, rate_limit=100_000)
    async with RunningSim(make_aether365_app(world), ssl_context=server_ctx) as sim:
        yield sim.url, bundle


async def test_tls_is_verified_by_default(
    http: HttpContext, tls_sim: tuple[str, Path]
) -> None:
    url, _ = tls_sim
    assert url.startswith("https://")
    client = aether_client(http, url, KEY_A, fast())
    with pytest.raises(VendorError) as info:
        await client.get_json("/tenants/me/policies")
    assert info.value.kind == "tls" and not info.value.retryable
    assert "certificate verify failed" in str(info.value)
    assert "http.ca_bundle" in str(info.value)
    assert client.requests == 1  # not retried: it will not fix itself


async def test_a_custom_ca_bundle_is_trusted(http: HttpContext, tls_sim: tuple[str, Path]) -> None:
    url, bundle = tls_sim
    client = aether_client(http, url, KEY_A, fast(ca_bundle=bundle))
    assert (await client.get_json("/tenants/me/policies"))["success"] is True


async def test_verification_can_be_turned_off_loudly(
    http: HttpContext, tls_sim: tuple[str, Path], log_stream: Any
) -> None:
    url, _ = tls_sim
    configure_logging(LogConfig(level="info", format="json"), stream=log_stream)
    client = aether_client(http, url, KEY_A, fast(verify_tls=False))
    assert (await client.get_json("/tenants/me/policies"))["success"] is True
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert any(line["event"] == "tls_verification_disabled" and line["level"] == "warning"
               for line in lines)
    assert REGISTRY.get_sample_value("bridge_tls_verify_disabled",
                                     {"component": "aether365"}) == 1
    metrics.TLS_VERIFY_DISABLED.labels("aether365").set(0)


async def test_user_agent_names_bridge_and_its_version(
    http: HttpContext, aether: tuple[Aether365World, RunningSim, list[Any]]
) -> None:
    _, sim, arrivals = aether
    await aether_client(http, sim.url, KEY_A, fast()).get_json("/tenants/me/policies")
    assert arrivals[0].headers["User-Agent"] == f"bridge/{__version__}"


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """A forward HTTP proxy that records the absolute URLs it was asked for."""
    seen: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        async with aiohttp.ClientSession() as session, session.get(
            str(request.url), headers={k: v for k, v in request.headers.items()
                                       if k.lower() not in ("host", "proxy-connection")},
        ) as upstream:
            return web.Response(body=await upstream.read(), status=upstream.status,
                                content_type="application/json")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", forward)
    async with RunningSim(app) as sim:
        yield sim.root, seen


async def test_an_explicit_proxy_is_used(
    http: HttpContext, aether: tuple[Aether365World, RunningSim, list[Any]],
    proxy: tuple[str, list[str]],
) -> None:
    _, sim, _ = aether
    proxy_url, seen = proxy
    client = aether_client(http, sim.url, KEY_A, fast(proxy=proxy_url))
    assert (await client.get_json("/tenants/me/policies"))["success"] is True
    assert seen == [sim.url + "/tenants/me/policies"]


async def test_the_proxy_environment_is_honoured(
    aether: tuple[Aether365World, RunningSim, list[Any]], proxy: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, sim, _ = aether
    proxy_url, seen = proxy
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)  # HTTPS_PROXY is the same rule for https://
    context = HttpContext()
    try:
        client = aether_client(context, sim.url, KEY_A, fast())
        await client.get_json("/tenants/me/policies")
    finally:
        await context.close()
    assert seen == [sim.url + "/tenants/me/policies"]


# -- credentials never leak -----------------------------------------------------------------

@pytest.fixture
async def echoing_vendor() -> AsyncIterator[str]:
    """A vendor that quotes the caller's credentials back in its error messages."""

    async def echo(request: web.Request) -> web.Response:
        said = f"{request.headers.get('Authorization')} / {request.headers.get('X-API-Key')}"
        status = 401 if request.path.endswith("/auth") else 500
        code = "AUTH_INVALID_TOKEN" if status == 401 else "INTERNAL_ERROR"
        return web.json_response({"success": False, "error": {"code": code,
                                  "message": f"rejected {said}"}}, status=status)

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    async with RunningSim(app) as sim:
        yield sim.root


async def test_no_credential_in_exceptions_logs_or_metrics(
    http: HttpContext, echoing_vendor: str, log_stream: Any
) -> None:
    configure_logging(LogConfig(level="debug", format="json"), stream=log_stream)
    secret = "ae_live_unregistered_" + "9" * 24
    client = aether_client(http, echoing_vendor, secret, fast(max_retries=1))
    texts = []
    for path in ("/auth", "/boom"):
        with pytest.raises(VendorError) as info:
            await client.get_json(path)
        texts += [str(info.value), repr(info.value), repr(info.value.args)]
    assert "rejected" in texts[0] and "***" in texts[0]
    for text in [*texts, log_stream.getvalue(), generate_latest(REGISTRY).decode()]:
        assert secret not in text
    assert "vendor_retry" in log_stream.getvalue()  # the retry was logged, redacted
