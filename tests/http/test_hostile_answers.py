"""The vendor client against answers no documented vendor gives: redirects, odd 3xx, bodies at
and over the size cap, repaired JSON, and ids that would step out of their path segment. Each
against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError
from structlog.testing import capture_logs

from bridge.http import HttpConfig, HttpContext, VendorClient, VendorError, url_path
from bridge.sim.common import RunningSim
from tests.http.conftest import fast
from tests.support.hostile_vendor import OtherOrigin

KEY = "ae_live_fake_http_tests_0123456789abcdef"  # fake key
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Recording:
    """A server answering every path with `answer`, recording the raw paths it was asked for."""

    def __init__(self, answer: Handler) -> None:
        self.paths: list[str] = []
        self._answer = answer
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self.sim = RunningSim(app)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.raw_path)
        return await self._answer(request)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Recording]]]:
    started: list[Recording] = []

    async def start(answer: Handler) -> Recording:
        server = Recording(answer)
        await server.sim.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.sim.stop()


def client(http: HttpContext, url: str, config: HttpConfig | None = None) -> VendorClient:
    return http.client(vendor="aether365", base_url=url,
                       headers={"Authorization": f"Bearer {KEY}"}, config=config or fast(),
                       limit_scope="tests", default_per_minute=100.0)


def sized(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    frame = b'{"pad":""}'
    return frame[:-2] + b" " * (size - len(frame)) + frame[-2:]


# -- redirects ------------------------------------------------------------------------------

async def test_a_redirect_elsewhere_is_neither_followed_nor_retried(
    http: HttpContext, serve: Callable[[Handler], Awaitable[Recording]]
) -> None:
    async with OtherOrigin() as other:
        async def away(request: web.Request) -> web.Response:
            return web.Response(status=308, headers={"Location": other.root + request.path_qs})

        server = await serve(away)
        vendor = client(http, server.sim.root + "/api")
        with pytest.raises(VendorError) as info:
            await vendor.get_json("/tenants/me/policies", {"page": 1})
    assert info.value.kind == "redirect" and info.value.fails_sweep and not info.value.retryable
    assert vendor.requests == 1 and other.seen == []
    assert KEY not in str(info.value)


@pytest.mark.parametrize(("status", "headers"), [(300, {}), (302, {}), (304, {}),
                                                 (302, {"Location": "http://[::1"})])
async def test_a_3xx_without_a_usable_location_is_an_error_not_an_answer(
    status: int, headers: dict[str, str], http: HttpContext,
    serve: Callable[[Handler], Awaitable[Recording]],
) -> None:
    """Not followed, and never taken as an empty success either: the body of a 3xx is not
    the list it seems to be."""
    async def odd(request: web.Request) -> web.Response:
        return web.json_response({"data": [], "meta": {"total": 0}}, status=status,
                                 headers=headers)

    server = await serve(odd)
    with pytest.raises(VendorError) as info:
        await client(http, server.sim.root).get_json("/tenants/me/policies")
    assert info.value.kind == "redirect"
    assert f"HTTP {status} redirect without a usable Location" in str(info.value)


async def test_same_origin_redirects_are_relative_to_the_request_and_bounded(
    http: HttpContext, serve: Callable[[Handler], Awaitable[Recording]]
) -> None:
    async def hop(request: web.Request) -> web.Response:
        hops = int(request.query.get("hops", "0"))
        if hops < 2:
            return web.Response(status=302, headers={"Location": f"moved?hops={hops + 1}"})
        return web.json_response({"hops": hops})

    server = await serve(hop)
    assert await client(http, server.sim.root + "/api").get_json("/a/b") == {"hops": 2}
    assert server.paths == ["/api/a/b", "/api/a/moved?hops=1", "/api/a/moved?hops=2"]
    with pytest.raises(VendorError) as info:
        await client(http, server.sim.root, fast(max_redirects=1)).get_json("/a/b")
    assert "more than 1 redirect(s) (http.max_redirects)" in str(info.value)


# -- size -----------------------------------------------------------------------------------

def test_the_default_cap_is_a_few_megabytes() -> None:
    """Far above any documented page (ScanOrbit's 100 findings are about 70 KiB)."""
    assert 4 << 20 <= HttpConfig().max_response_bytes <= 16 << 20
    with pytest.raises(ValidationError):
        HttpConfig(max_response_bytes=10)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("size", "accepted"), [(4096, True), (4097, False)])
async def test_the_cap_is_exact(
    size: int, accepted: bool, chunked: bool, http: HttpContext,
    serve: Callable[[Handler], Awaitable[Recording]],
) -> None:
    async def body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = size
        await response.prepare(request)
        await response.write(sized(size))
        await response.write_eof()
        return response

    server = await serve(body)
    vendor = client(http, server.sim.root, fast(max_response_bytes=4096))
    if accepted:
        assert set(await vendor.get_json("/x")) == {"pad"}
        return
    with pytest.raises(VendorError) as info:
        await vendor.get_json("/x")
    assert info.value.kind == "too_large" and not info.value.retryable
    assert vendor.requests == 1


# -- decoding -------------------------------------------------------------------------------

async def test_a_repaired_answer_is_logged_and_kept(
    http: HttpContext, serve: Callable[[Handler], Awaitable[Recording]]
) -> None:
    async def poisoned(request: web.Request) -> web.Response:
        return web.Response(body=b'{"name": "caf\xe9", "score": 1e999}',
                            content_type="application/json")

    server = await serve(poisoned)
    with capture_logs() as logs:
        body = await client(http, server.sim.root).get_json("/x")
    assert body == {"name": "caf\ufffd", "score": "1e999"}
    repaired = [e for e in logs if e["event"] == "vendor_response_repaired"]
    assert len(repaired) == 1 and repaired[0]["repairs"] == ["invalid_utf8", "number"]


# -- paths ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("segment", "encoded"), [
    ("../../../admin/keys?all=1#", "..%2F..%2F..%2Fadmin%2Fkeys%3Fall%3D1%23"),
    ("a b/ü%", "a%20b%2F%C3%BC%25"),
    ("...", "..."),
    (42, "42"),
])
def test_url_path_encodes_each_segment_whole(segment: Any, encoded: str) -> None:
    assert url_path("scans", segment, "results") == f"/scans/{encoded}/results"


@pytest.mark.parametrize("segment", ["", ".", ".."])
def test_url_path_refuses_what_no_encoding_keeps_in_place(segment: str) -> None:
    with pytest.raises(VendorError) as info:
        url_path("findings", segment)
    assert info.value.kind == "schema" and not info.value.fails_sweep


async def test_an_encoded_path_reaches_the_server_as_sent(
    http: HttpContext, serve: Callable[[Handler], Awaitable[Recording]]
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    server = await serve(ok)
    vendor = client(http, server.sim.root + "/api/v1")
    path = url_path("findings", "../../../admin/keys?all=1#")
    answer = await vendor.get_json(path, {"page": 1})
    assert server.paths == [f"/api/v1{path}?page=1"]
    assert answer == {"path": "/api/v1/findings/../../../admin/keys?all=1#"}  # one segment


@pytest.mark.parametrize("path", ["/findings/../admin", "/findings?all=1", "/a#b", "findings"])
async def test_an_unencoded_path_is_refused_before_any_request(
    path: str, http: HttpContext, serve: Callable[[Handler], Awaitable[Recording]]
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    server = await serve(ok)
    vendor = client(http, server.sim.root)
    with pytest.raises(ValueError, match="url_path"):
        await vendor.get_json(path)
    assert vendor.requests == 0 and server.paths == []
