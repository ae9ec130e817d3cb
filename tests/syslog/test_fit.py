"""Oversize handling, pure: every message fits the budget; truncation keeps every key and cuts
values to prefixes; splitting loses nothing (parts reassemble to the unsplit event)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.model import Event
from bridge.sinks.formats.cef import CefConfig, encode_cef, fit_cef
from bridge.sinks.formats.common import PART_KEY, FitError
from bridge.sinks.formats.json import encode_json, fit_json
from bridge.sinks.formats.leef import LeefConfig, encode_leef, fit_leef
from tests.syslog.checks import merge, shrunk
from tests.syslog.events import TEN_KB_2, TEN_KB_ESC, event
from tests.syslog.parsers import parse_cef, parse_leef
from tests.syslog.strategies import events

CEF = CefConfig()
LEEF = LeefConfig(delimiter="^")
limits = st.integers(800, 4000)
modes = st.sampled_from(["truncate", "split"])


def small_identifiers(e: Event) -> Event:
    """Identifiers are never shrunk, so keep them small enough for any budget under test."""
    return dataclasses.replace(e, kind=e.kind[:16], key=e.key[:16], tenant=e.tenant[:16])


def size(text: str) -> int:
    return len(text.encode("utf-8"))


def check_kv_fit(whole: list[tuple[str, str]], parts: list[list[tuple[str, str]]],
                 fixed: int, mode: str) -> None:
    if mode == "truncate":
        assert len(parts) == 1
        got = parts[0]
        assert [k for k, _ in got] == [k for k, _ in whole]
        assert got[:fixed] == whole[:fixed]
        assert all(w.startswith(g) for (_, g), (_, w) in zip(got, whole, strict=True))
        return
    total = len(parts)
    loose: list[tuple[str, str]] = []
    for number, part in enumerate(parts, start=1):
        assert part[:fixed] == whole[:fixed]
        assert part[fixed] == (PART_KEY, f"{number}/{total}")
        loose += part[fixed + 1:]
    assert merge(loose) == whole[fixed:]


@settings(max_examples=100, deadline=None)
@given(events().map(small_identifiers), limits, modes)
def test_cef_fits_any_budget(e: Event, limit: int, mode: str) -> None:
    text = encode_cef(e, CEF)
    parts = fit_cef(e, CEF, limit, mode)  # type: ignore[arg-type]
    assert all(size(p) <= limit for p in parts)
    if size(text) <= limit:
        assert parts == [text]
        return
    whole = parse_cef(text)
    parsed = [parse_cef(p) for p in parts]
    for cef in parsed:
        assert (cef.vendor, cef.signature, cef.severity) == (whole.vendor, whole.signature,
                                                              whole.severity)
        assert whole.name.startswith(cef.name)
    check_kv_fit(whole.extensions, [c.extensions for c in parsed], 3, mode)


@settings(max_examples=100, deadline=None)
@given(events().map(small_identifiers), limits, modes)
def test_leef_fits_any_budget(e: Event, limit: int, mode: str) -> None:
    text = encode_leef(e, LEEF)
    parts = fit_leef(e, LEEF, limit, mode)  # type: ignore[arg-type]
    assert all(size(p) <= limit for p in parts)
    if size(text) <= limit:
        assert parts == [text]
        return
    whole = parse_leef(text)
    parsed = [parse_leef(p) for p in parts]
    assert all(p.event_id == whole.event_id for p in parsed)
    check_kv_fit(whole.attributes, [p.attributes for p in parsed], 3, mode)


def emptied(value: Any) -> Any:
    if isinstance(value, str):
        return ""
    if isinstance(value, dict):
        return {k: emptied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [emptied(v) for v in value]
    return value


IDENTIFIERS = ("id", "type", "item_uid", "severity", "severity_score", "counter", "occurred_at")


@settings(max_examples=100, deadline=None)
@given(events().map(small_identifiers).map(
    lambda e: dataclasses.replace(e, source=e.source[:16], vendor=e.vendor[:16],
                                  scope=e.scope[:16])), limits, modes)
def test_json_fits_any_budget(e: Event, limit: int, mode: str) -> None:
    text = encode_json(e)
    try:
        parts = fit_json(e, limit, mode)  # type: ignore[arg-type]
    except FitError:
        # Refusing is right only when the structure without its strings does not fit.
        whole = json.loads(text)
        skeleton = {k: v if k in IDENTIFIERS else emptied(v) for k, v in whole.items()}
        if mode == "truncate":
            assert size(json.dumps(skeleton, ensure_ascii=False)) > limit
        else:
            room = limit - size(json.dumps({"id": e.id, "part": 9999, "parts": 9999}))
            assert any(size(json.dumps({k: v}, ensure_ascii=False)) > room
                       for k, v in skeleton.items())
        return
    assert all(size(p) <= limit for p in parts)
    if size(text) <= limit:
        assert parts == [text]
        return
    whole = json.loads(text)
    objects = [json.loads(p) for p in parts]
    if mode == "truncate":
        (got,) = objects
        assert {k: got[k] for k in IDENTIFIERS} == {k: whole[k] for k in IDENTIFIERS}
        assert shrunk(whole, got)
        return
    merged: dict[str, Any] = {}
    for number, obj in enumerate(objects, start=1):
        assert (obj.pop("id"), obj.pop("part"), obj.pop("parts")) == (
            whole["id"], number, len(objects))
        assert not set(obj) & set(merged)
        merged.update(obj)
    assert set(merged) == set(whole) - {"id"}
    assert all(shrunk(whole[k], merged[k]) for k in merged)
    assert all(merged[k] == whole[k] for k in IDENTIFIERS if k != "id")


def test_split_carries_a_10kb_value_whole_over_2kb_messages() -> None:
    e = event(status=TEN_KB_ESC, title=TEN_KB_2)
    parts = fit_cef(e, CEF, 2000, "split")
    assert len(parts) > 4 and all(size(p) <= 2000 for p in parts)
    pairs: list[tuple[str, str]] = []
    for part in parts:
        pairs += parse_cef(part).extensions[4:]  # after rt, act, externalId, bridgePart
    assert dict(merge(pairs))["cs4"] == TEN_KB_ESC[:4000]
    assert dict(merge(pairs))["msg"] == TEN_KB_2[:512]  # "a" + 511 x é = 1023 bytes


def test_a_budget_smaller_than_the_header_is_refused() -> None:
    e = event(kind="k" * 900)
    for mode in ("truncate", "split"):
        with pytest.raises(FitError):
            fit_cef(e, CEF, 500, mode)  # type: ignore[arg-type]
        with pytest.raises(FitError):
            fit_json(event(attributes={str(i): i for i in range(100)}), 500, mode)  # type: ignore[arg-type]
