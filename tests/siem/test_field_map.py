"""Every source kind, simulator → source → the default CEF and LEEF encoders, read back with the
strict parsers: an attribute a SIEM correlates on lands in its standard key, the rest of what
the default map carries goes in labelled custom strings, and the header names the vendor.

`STANDARD` is the statement of which attributes have a standard home; `OTHER` lists those
that deliberately have none. An attribute a source starts sending that is in neither fails
`test_every_attribute_is_classified`, so a new user, address or host field cannot slip past
the field map unnoticed (issue 21: Aether365's `userPrincipalName`/`ipAddress` did).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_config
from bridge.model import Event
from bridge.sim.aether365 import Aether365World
from bridge.sim.ayliea import AylieaWorld
from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld
from bridge.sinks.formats.cef import CefConfig, encode_cef
from bridge.sinks.formats.leef import LeefConfig, encode_leef
from bridge.version import __version__
from tests.conftest import aether365_source, ayliea_source, base_config, scanorbit_source
from tests.support.harness import Harness
from tests.syslog.parsers import Cef, Leef, parse_cef, parse_leef

T = "tenant-contoso"

# Attribute -> (CEF key or "cs:<label>", LEEF key). None: the format has no home for it.
STANDARD: dict[str, tuple[str | None, str]] = {
    "userPrincipalName": ("duser", "usrName"),
    "ipAddress": ("src", "src"),
    "resource_name": ("dhost", "identHostName"),
    "help_url": ("request", "url"),
    "aws_account_number": ("cs:AWS Account", "awsAccount"),
    "account_name": (None, "accountName"),
    "resource_region": ("cs:Cloud Region", "region"),
    "resource_resourceId": (None, "resource"),
}
# Attributes with no standard key: they travel in the JSON formats and `raw`.
OTHER = frozenset({
    "type", "awsAccountId", "resourceId", "certificateId", "firstDetectedAt",
    "resource_service", "certificate_primaryDomain", "certificate_notAfter",
    "framework", "source_tool", "scan_id", "scan_completed_at", "scan_type", "score",
    "below_floor", "displayName", "riskLastUpdatedDateTime", "riskEventType", "location",
    "detectedDateTime", "category", "createdDateTime", "current", "secure", "framework_id",
    "priority", "overall_score", "grade", "completed_at", "name", "vendor", "confidence",
    "detected_at",
})


@dataclass(frozen=True)
class Case:
    vendor: str  # the device the header must name
    kind: str
    # Standard attributes every event of the kind must carry (so the table cannot pass empty).
    expected: frozenset[str]


Setup = Callable[[Path, Any], Awaitable[list[Event]]]


async def sweep_events(config: dict[str, Any]) -> list[Event]:
    async with Harness(parse_config(config)) as h:
        source = h.source()
        events: list[Event] = []
        for scope in source.scopes:
            events += (await h.sweep(scope)).events
        return events


async def scanorbit_events(tmp_path: Path, sim: tuple[ScanOrbitWorld, RunningSim]) -> list[Event]:
    world, running = sim
    for _ in range(4):
        world.add_finding()
    return await sweep_events(base_config(tmp_path, [scanorbit_source(running.url,
                                                                       enrich_new=10)]))


async def aether365_events(tmp_path: Path, sim: tuple[Aether365World, RunningSim]) -> list[Event]:
    world, running = sim
    world.populate(T, tests=6, failing=3)
    world.run_scan(T)
    world.add_risky_user(T)
    world.add_risk_detection(T)
    world.add_alert(T)
    world.default_policies(T, compliant=2)
    return await sweep_events(base_config(tmp_path, [aether365_source(running.url)]))


async def ayliea_events(tmp_path: Path, sim: tuple[AylieaWorld, RunningSim]) -> list[Event]:
    world, running = sim
    for _ in range(3):
        world.add_recommendation()
    world.set_score("ai-security", 72)
    world.add_platform("ChatGPT", "OpenAI")
    return await sweep_events(base_config(tmp_path, [ayliea_source(running.url,
                                                                   discovery=True)]))


CASES: dict[str, tuple[str, Setup, list[Case]]] = {
    "scanorbit": ("scanorbit", scanorbit_events, [
        Case("ScanOrbit", "finding", frozenset({
            "resource_name", "resource_region", "resource_resourceId", "aws_account_number",
            "account_name"})),
    ]),
    "aether365": ("aether365", aether365_events, [
        Case("Aether365", "test_result", frozenset({"help_url"})),
        Case("Aether365", "score", frozenset()),
        Case("Aether365", "risky_user", frozenset({"userPrincipalName"})),
        Case("Aether365", "risk_detection", frozenset({"userPrincipalName", "ipAddress"})),
        Case("Aether365", "security_alert", frozenset()),
        Case("Aether365", "policy", frozenset()),
    ]),
    "ayliea": ("ayliea", ayliea_events, [
        Case("Ayliea", "recommendation", frozenset()),
        Case("Ayliea", "score", frozenset()),
        Case("Ayliea", "discovery", frozenset()),
    ]),
}


@pytest.fixture(params=sorted(CASES))
async def swept(request: pytest.FixtureRequest, tmp_path: Path,
                scanorbit: tuple[ScanOrbitWorld, RunningSim],
                aether365: tuple[Aether365World, RunningSim],
                ayliea: tuple[AylieaWorld, RunningSim]) -> tuple[list[Case], list[Event]]:
    """One source's events (the simulators are cheap: each test starts all three)."""
    fixture, setup, cases = CASES[request.param]
    sims = {"scanorbit": scanorbit, "aether365": aether365, "ayliea": ayliea}
    return cases, await setup(tmp_path, sims[fixture])


def custom(cef: Cef, label: str) -> str | None:
    """The value of the cs/flexString pair labelled `label` (the label must be there once)."""
    for key, value in cef.extensions:
        if key.endswith("Label") and value == label:
            return cef.get(key.removesuffix("Label"))
    return None


def check_cef(event: Event, cef: Cef, case: Case) -> None:
    assert (cef.vendor, cef.product, cef.device_version) == (case.vendor, case.vendor,
                                                             __version__)
    assert cef.signature == f"{event.kind}:{event.type.value}"
    for name, value in event.attributes.items():
        if name not in STANDARD or value in (None, ""):
            continue
        key = STANDARD[name][0]
        if key is None:
            continue
        got = custom(cef, key[3:]) if key.startswith("cs:") else cef.get(key)
        assert got == str(value), f"{event.kind}: attribute {name} not in CEF {key}: {cef}"
    # The item's identity (a compliance test's id is its key) in a labelled custom string.
    assert custom(cef, "itemKey") == event.key
    assert custom(cef, "itemUid") == event.item_uid
    # Every custom value comes with its label, and no label without its value.
    keys = [k for k, _ in cef.extensions]
    for key in keys:
        if key.startswith(("cs", "cn", "flexString")) and not key.endswith("Label"):
            assert f"{key}Label" in keys, f"{key} without a label"
        if key.endswith("Label"):
            assert key.removesuffix("Label") in keys, f"{key} without a value"


def check_leef(event: Event, leef: Leef, case: Case) -> None:
    assert (leef.vendor, leef.product, leef.device_version) == (case.vendor, case.vendor,
                                                                __version__)
    for name, value in event.attributes.items():
        if name in STANDARD and value not in (None, ""):
            key = STANDARD[name][1]
            assert leef.get(key) == str(value), f"{event.kind}: {name} not in LEEF {key}"
    assert leef.get("itemKey") == event.key


async def test_every_attribute_with_a_standard_key_lands_in_it(
        swept: tuple[list[Case], list[Event]]) -> None:
    cases, events = swept
    by_kind = {case.kind: case for case in cases}
    assert {e.kind for e in events} == set(by_kind), "every kind of the source was swept"
    for event in events:
        case = by_kind[event.kind]
        present = {n for n, v in event.attributes.items() if v not in (None, "")}
        assert case.expected <= present, f"{event.kind} lacks {case.expected - present}"
        check_cef(event, parse_cef(encode_cef(event, CefConfig())), case)
        check_leef(event, parse_leef(encode_leef(event, LeefConfig())), case)


async def test_every_attribute_is_classified(swept: tuple[list[Case], list[Event]]) -> None:
    _, events = swept
    unknown = {(e.kind, n) for e in events for n in e.attributes
               if n not in STANDARD and n not in OTHER}
    assert unknown == set(), ("attributes without a decision on their CEF/LEEF key: add each "
                              "to STANDARD (and the field map) or OTHER")


async def test_a_configured_device_overrides_the_vendor(
        tmp_path: Path, aether365: tuple[Aether365World, RunningSim]) -> None:
    (event, *_) = [e for e in await aether365_events(tmp_path, aether365)
                   if e.kind == "risk_detection"]
    cef = parse_cef(encode_cef(event, CefConfig(vendor="Acme", product="M365 Bridge",
                                                version="9")))
    assert (cef.vendor, cef.product, cef.device_version) == ("Acme", "M365 Bridge", "9")
    assert cef.get("duser") == event.attributes["userPrincipalName"]
    leef = parse_leef(encode_leef(event, LeefConfig(vendor="Acme")))
    assert (leef.vendor, leef.product) == ("Acme", "Aether365")
    assert leef.get("src") == event.attributes["ipAddress"]
