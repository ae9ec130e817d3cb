"""A hostile vendor against the real ScanOrbit source and pipeline (issue 15, points 1-3 and 9).

Every attack runs through real sweeps: the hostile server (tests/support/hostile_vendor.py)
speaks ScanOrbit's contract, the pipeline diffs into a real SQLite file and routes to a file
sink. The promise under attack is "never a false resolved", so most tests script an upstream
change a good answer would resolve (one finding resolved by the vendor, ten gone), sweep under
attack three times (more than the two misses absence needs), then prove the same sweeps do
resolve exactly that once the attack stops: the attacked sweeps could have resolved, and didn't.
"""

from __future__ import annotations

import json
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from bridge.config import parse_config
from bridge.model import EventType
from bridge.sweep import SweepResult
from bridge.vendor_json import TOO_DEEP
from tests.conftest import SIM_SCANORBIT_KEY, base_config, scanorbit_source
from tests.support.harness import Harness
from tests.support.hostile_vendor import (
    DEEP_NESTING,
    HUGE_NUMBER,
    INVALID_UTF8,
    LONE_SURROGATE,
    HostileVendor,
    OtherOrigin,
)

HTTP: dict[str, Any] = {"rate_limit_per_minute": 60_000, "backoff_initial": 0.01,
                        "backoff_max": 0.02, "max_retries": 1, "timeout": 2}
FINDINGS = 250  # three pages of 100


@pytest.fixture
async def vendor() -> AsyncIterator[HostileVendor]:
    async with HostileVendor(SIM_SCANORBIT_KEY) as hostile:
        hostile.world.bulk_add(FINDINGS)
        yield hostile


@pytest.fixture
async def elsewhere() -> AsyncIterator[OtherOrigin]:
    async with OtherOrigin() as other:
        yield other


def harness(tmp_path: Path, url: str, **source: Any) -> Harness:
    source.setdefault("full_resweep_interval", 0)
    source["http"] = {**HTTP, **source.get("http", {})}
    return Harness(parse_config(base_config(tmp_path, [scanorbit_source(url, **source)])))


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def resolved(*results: SweepResult) -> set[str]:
    return {e.key for r in results for e in r.events if e.type is EventType.RESOLVED}


async def resolves_nothing(h: Harness, vendor: HostileVendor, outcome: str,
                           arm: Callable[[], object],
                           calm: Callable[[], object] | None = None) -> list[SweepResult]:
    """Baseline, upstream changes, three sweeps under `arm`'s attack that must each end in
    `outcome` and resolve nothing; then, after `calm`, the two sweeps that do resolve them."""
    world = vendor.world
    baseline = await h.sweep()
    assert baseline.record.outcome == "complete" and len(baseline.events) == FINDINGS
    ordered = [f["id"] for f in world.ordered()]
    fixed, gone = ordered[5], set(ordered[-10:])
    world.resolve(fixed)
    for finding_id in gone:
        world.remove(finding_id)
    arm()
    attacked = [await h.sweep() for _ in range(3)]
    for result in attacked:
        assert result.record.outcome == outcome, result.record
    assert resolved(*attacked) == set()
    assert await h.store.list_items(state="resolved", limit=1000) == []
    (calm or vendor.calm)()
    first, second = await h.sweep(), await h.sweep()
    assert (first.record.outcome, second.record.outcome) == ("complete", "complete")
    assert resolved(first) == {fixed}  # the vendor's word, at once
    assert resolved(second) == gone  # absence: two complete sweeps
    return attacked


# -- 1. redirects ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("path", ["/findings$", "/scans/recent$"])
async def test_a_redirect_to_another_origin_is_refused_and_fails_the_sweep(
    status: int, path: str, tmp_path: Path, vendor: HostileVendor, elsewhere: OtherOrigin
) -> None:
    """The other origin would answer "no findings at all"; followed, that resolved everything.
    Refused, it never even hears from us, and every attacked sweep is `failed`, saying why."""
    refused = counter("bridge_api_redirects_refused_total", vendor="scanorbit")
    async with harness(tmp_path, vendor.url) as h:
        attacked = await resolves_nothing(
            h, vendor, "failed",
            lambda: vendor.attack("redirect", path, to=elsewhere.root, status=status))
    assert elsewhere.seen == []  # no request, so no key, ever reached the other origin
    for result in attacked:
        error = result.record.error or ""
        assert f"HTTP {status} redirect to another origin" in error
        assert elsewhere.root in error and "base_url" in error
    assert counter("bridge_api_redirects_refused_total", vendor="scanorbit") == refused + 3


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return server, bundle


async def test_an_https_vendor_redirecting_to_http_is_refused(
    tmp_path: Path, tls: tuple[ssl.SSLContext, Path], elsewhere: OtherOrigin
) -> None:
    """A downgrade to plain http would send the key in clear text to whoever listens."""
    server, bundle = tls
    async with HostileVendor(SIM_SCANORBIT_KEY, ssl_context=server) as vendor:
        vendor.world.bulk_add(FINDINGS)
        assert vendor.url.startswith("https://") and elsewhere.root.startswith("http://")
        async with harness(tmp_path, vendor.url, http={"ca_bundle": str(bundle)}) as h:
            attacked = await resolves_nothing(
                h, vendor, "failed",
                lambda: vendor.attack("redirect", "/findings$", to=elsewhere.root))
    assert elsewhere.seen == []
    assert all("another origin (http://" in (r.record.error or "") for r in attacked)


async def test_a_same_origin_redirect_is_followed_with_the_key(
    tmp_path: Path, vendor: HostileVendor
) -> None:
    vendor.attack("redirect", "/findings$", to=vendor.root, status=307)
    async with harness(tmp_path, vendor.url) as h:
        result = await h.sweep()
    assert result.record.outcome == "complete" and len(result.events) == FINDINGS
    hops = [s for s in vendor.seen if "redirected=1" in s.raw_path]
    assert len(hops) == 3  # one per page
    assert all(s.api_key == SIM_SCANORBIT_KEY for s in hops)


async def test_same_origin_redirects_can_be_turned_off(
    tmp_path: Path, vendor: HostileVendor
) -> None:
    vendor.attack("redirect", "/findings$", to=vendor.root)
    async with harness(tmp_path, vendor.url, http={"max_redirects": 0}) as h:
        result = await h.sweep()
    assert result.record.outcome == "failed"
    assert "more than 0 redirect(s) (http.max_redirects)" in (result.record.error or "")
    assert not any("redirected=1" in s.raw_path for s in vendor.seen)


async def test_a_same_origin_redirect_loop_fails_the_sweep(
    tmp_path: Path, vendor: HostileVendor
) -> None:
    async with harness(tmp_path, vendor.url) as h:
        await resolves_nothing(
            h, vendor, "failed",
            lambda: vendor.attack("redirect", "/findings$", to=vendor.root, loop=True))
    # Per attacked sweep: the request and three redirects followed (http.max_redirects), no more.
    assert sum("redirected=1" in s.raw_path for s in vendor.seen) == 3 * 3


# -- 2. response size -----------------------------------------------------------------------

@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_page_fails_that_page(
    chunked: bool, tmp_path: Path, vendor: HostileVendor
) -> None:
    """Valid JSON, just too big: refused at the cap (declared or streamed), the sweep
    incomplete, instead of held in memory and believed."""
    cut = counter("bridge_api_responses_too_large_total", vendor="scanorbit")
    cap = 256 * 1024  # a real page of 100 findings is about 70 KiB
    async with harness(tmp_path, vendor.url, http={"max_response_bytes": cap}) as h:
        attacked = await resolves_nothing(
            h, vendor, "incomplete",
            lambda: vendor.attack("oversized", "/findings$", page=2, size=4 << 20,
                                  chunked=chunked))
    excess = "sent more bytes on the wire than" if chunked else f"declares {4 << 20} bytes"
    for result in attacked:
        assert excess in result.record.notes[0]
        assert f"http.max_response_bytes ({cap}) allows" in result.record.notes[0]
    assert counter("bridge_api_responses_too_large_total", vendor="scanorbit") == cut + 3


async def test_a_gzip_bomb_is_cut_off_at_the_cap_without_inflating_it(
    tmp_path: Path, vendor: HostileVendor
) -> None:
    """64 KiB on the wire inflate to 64 MiB of valid JSON. The client stops inflating at its
    1 MiB cap: Python's allocations during the attacked sweeps stay far below the bomb."""
    bomb = 64 << 20
    async with harness(tmp_path, vendor.url, http={"max_response_bytes": 1 << 20}) as h:
        def arm() -> None:
            vendor.attack("gzip_bomb", "/findings$", page=2, size=bomb)
            tracemalloc.start()

        def calm() -> None:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert peak < 16 << 20, f"peak {peak} bytes while a {bomb}-byte bomb went off"
            vendor.calm()

        attacked = await resolves_nothing(h, vendor, "incomplete", arm, calm)
    for result in attacked:
        assert "decompressed to more bytes than http.max_response_bytes" in result.record.notes[0]


async def test_a_slow_drip_body_is_cut_off_by_the_timeout(
    tmp_path: Path, vendor: HostileVendor
) -> None:
    """Headers at once, then a byte every 50 ms: each read succeeds, the total never ends."""
    http = {"timeout": 0.3, "max_retries": 1}
    async with harness(tmp_path, vendor.url, http=http) as h:
        def timed_sweeps() -> None:
            vendor.attack("slow_drip", "/findings$", page=2, interval=0.05)

        started = time.monotonic()
        attacked = await resolves_nothing(h, vendor, "incomplete", timed_sweeps)
    # Three attacked sweeps of two 0.3 s attempts each, plus five quick ones.
    assert time.monotonic() - started < 10
    for result in attacked:
        assert "page 2" in result.record.notes[0] and "timed out after 0.3s" in (
            result.record.notes[0])


# -- 3. poison rows -------------------------------------------------------------------------

def _innermost(value: Any) -> Any:
    while isinstance(value, list) and value:
        value = value[0]
    return value


POISONS = {
    # name: (field, bytes served, what the stored finding holds, the repair counted)
    "deep nesting": ("details", DEEP_NESTING, lambda raw: _innermost(raw["details"]) == TOO_DEEP,
                     "too_deep"),
    "lone surrogate": ("summary", LONE_SURROGATE,
                       lambda raw: raw["summary"] == "cut mid-emoji \ufffd", "lone_surrogate"),
    "1e999": ("details", HUGE_NUMBER, lambda raw: raw["details"] == "1e999", "number"),
    "invalid utf-8": ("summary", INVALID_UTF8,
                      lambda raw: raw["summary"] == "caf\ufffd cr\ufffdme", "invalid_utf8"),
}


@pytest.mark.parametrize("poison", list(POISONS))
async def test_a_poison_value_is_repaired_and_blocks_nothing(
    poison: str, tmp_path: Path, vendor: HostileVendor
) -> None:
    """Before: the page was "not valid JSON" (or the sweep crashed storing it), later pages
    were never read, and the scope never resolved anything again. Now the value is repaired,
    the finding is stored and delivered, and the scope resolves as usual."""
    field, raw, holds, repair = POISONS[poison]
    repaired = counter("bridge_api_responses_repaired_total", vendor="scanorbit", repair=repair)
    token = vendor.poison("poison-here", raw)
    poisoned = vendor.world.add_finding(**{field: token})["id"]  # the newest: page 1
    async with harness(tmp_path, vendor.url) as h:
        first = await h.sweep()
        assert first.record.outcome == "complete", first.record
        assert first.record.requests == 2 + 3  # the scan probe, the accounts and every page
        assert len(first.events) == FINDINGS + 1
        assert await h.deliver() == {"events": 0}  # nothing left undelivered
        gone = [f["id"] for f in vendor.world.ordered()[-3:]]
        for finding_id in gone:
            vendor.world.remove(finding_id)
        later = [await h.sweep() for _ in range(2)]
    assert resolved(*later) == set(gone)
    delivered = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(delivered) == FINDINGS + 1
    stored = next(e for e in delivered if e["key"] == poisoned)
    assert holds(stored["raw"]), stored["raw"]
    assert counter("bridge_api_responses_repaired_total", vendor="scanorbit",
                   repair=repair) >= repaired + 1


async def test_a_finding_that_cannot_be_read_is_skipped_alone_and_resolves_nothing(
    tmp_path: Path, vendor: HostileVendor
) -> None:
    """A status that is a list cannot be normalised: that finding alone is skipped (counted,
    logged with its id), the rest of its page and the later pages still count, and the sweep
    stays incomplete, so nothing resolves while the vendor serves it."""
    world = vendor.world
    broken = world.ordered()[40]["id"]  # on page 1
    skipped = counter("bridge_items_skipped_total", source="scanorbit", kind="finding")

    def arm() -> None:
        world.findings[broken]["status"] = ["open"]
        world.touch()

    def calm() -> None:
        world.findings[broken]["status"] = "open"
        world.touch()

    async with harness(tmp_path, vendor.url) as h:
        with capture_logs() as logs:
            attacked = await resolves_nothing(h, vendor, "incomplete", arm, calm)
    for result in attacked:
        assert result.record.requests == 2 + 3  # the later pages were read
        assert f"{broken}: data.40.status" in result.record.notes[0]
    events = [e for e in logs if e["event"] == "vendor_items_skipped"]
    assert [e["ids"] for e in events] == [[broken]] * 3
    assert counter("bridge_items_skipped_total", source="scanorbit", kind="finding") == (
        skipped + 3)


async def test_a_vendor_breaking_every_row_costs_a_log_line_per_page_not_per_row(
    tmp_path: Path, vendor: HostileVendor
) -> None:
    """A vendor renaming or retyping a field makes every row unusable at once."""
    for finding in vendor.world.findings.values():
        finding["status"] = 3
    vendor.world.touch()
    skipped = counter("bridge_items_skipped_total", source="scanorbit", kind="finding")
    async with harness(tmp_path, vendor.url) as h:
        with capture_logs() as logs:
            result = await h.sweep()
    assert result.record.outcome == "incomplete" and result.events == ()
    lines = [e for e in logs if e["event"] == "vendor_items_skipped"]
    assert [e["count"] for e in lines] == [100, 100, 50]
    assert all(len(e["ids"]) == 10 for e in lines)
    assert "skipped 100 row(s)" in result.record.notes[0] and "and 97 more" in (
        result.record.notes[0])
    assert counter("bridge_items_skipped_total", source="scanorbit", kind="finding") == (
        skipped + FINDINGS)


# -- 9. vendor ids in URL paths -------------------------------------------------------------

async def test_a_vendor_id_cannot_step_into_another_path(
    tmp_path: Path, vendor: HostileVendor
) -> None:
    """Enrichment puts each new finding's id into `/findings/{id}`. An id that is a path
    traversal stays one encoded segment; `..` (which no encoding keeps from being normalised
    by some server on the way) is not requested at all."""
    world = vendor.world
    traversal = world.add_finding(id="../../../admin/keys?all=1#")["id"]
    dots = world.add_finding(id="..")["id"]
    async with harness(tmp_path, vendor.url, enrich_new=FINDINGS + 2) as h:
        result = await h.sweep()
    assert result.record.outcome == "complete"
    paths = [s.raw_path for s in vendor.seen]
    assert "/api/v1/findings/..%2F..%2F..%2Fadmin%2Fkeys%3Fall%3D1%23" in paths
    assert all(p.startswith(("/api/v1/findings", "/api/v1/scans/recent", "/api/v1/accounts"))
               for p in paths), paths
    assert not any(p.split("?")[0].endswith(("/findings/..", "/findings/%2E%2E")) for p in paths)
    events = {e.key: e for e in result.events}
    assert "resource_name" in events[traversal].attributes  # enriched by its own path
    assert dots in events and "resource_name" not in events[dots].attributes
