"""Ayliea reads listed recommendations without pydantic (`AylieaSource.read`): that shortcut
must never accept a row `_Recommendation` refuses, nor map one differently.

Every field of a recommendation is given every shape a JSON vendor can send it (missing, null,
empty, text, numbers, booleans, lists, objects), one field at a time and in pairs; each row is
read both ways and the answers compared, attributes in order. Then the same rows go through
`to_items`, as a page does, against the path without `read`.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import astuple
from typing import Any

import pytest

from bridge.http import HttpContext
from bridge.model import Item, JSONScalar, json_scalar
from bridge.sources.ayliea import AylieaConfig, AylieaSource, _Recommendation
from bridge.sources.rows import ROW_ERRORS, Unusable, to_items

_MISSING = object()
SHAPES: tuple[Any, ...] = (_MISSING, None, "", "x", "open", " Completed ", "dismissed", "2",
                           "ünï\ufffd", 0, 1, 3, 9, -1, 1.5, 2.0, 2**63, 2**70, True, False, [],
                           ["a"], {}, {"a": [1, {"b": None}]})
FIELDS = ("id", "status", "title", "priority", "framework_id", "category")
BASE: dict[str, Any] = {
    "id": "rec-1", "title": "Restrict model access", "priority": 2, "status": "open",
    "framework_id": "nist-ai-rmf", "category": "governance", "effort": "low",
}


def rows() -> Iterator[Any]:
    yield BASE
    yield from ([], "rec-1", 7, None, True)  # not objects at all
    for field in FIELDS:
        for shape in SHAPES:
            yield _with(BASE, {field: shape})
    for a, b in itertools.combinations(FIELDS, 2):
        for x, y in itertools.product(SHAPES[:12], repeat=2):
            yield _with(BASE, {a: x, b: y})


def _with(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    row = dict(base)
    for k, v in changes.items():
        if v is _MISSING:
            row.pop(k, None)
        else:
            row[k] = v
    return row


@pytest.fixture
async def source() -> AsyncIterator[AylieaSource]:
    http = HttpContext()
    config = AylieaConfig.model_validate({
        "name": "ay", "type": "ayliea", "api_key": "ayliea_pk_" + "0123456789" * 2,
        "tenant": "contoso", "priority_severity": {1: "critical", 2: "high", 3: "medium"},
        "unknown_priority_severity": "info"})
    yield AylieaSource(config, http)
    await http.close()


def _reference(source: AylieaSource, raw: dict[str, Any], rec: _Recommendation) -> Item:
    """A recommendation as an item, plainly (as it was written before it was tuned): the
    specification `AylieaSource._map` is held to."""
    status = rec.status.strip().lower()
    resolved = status in source.config.resolved_statuses
    table = source.config.priority_severity
    fallback = source.config.unknown_priority_severity
    severity = fallback if rec.priority is None else table.get(rec.priority, fallback)
    attrs: dict[str, JSONScalar] = {k: json_scalar(raw[k]) for k in ("framework_id", "category")
                                    if raw.get(k)}
    attrs["priority"] = rec.priority
    return Item(kind="recommendation", key=rec.id, title=rec.title or rec.id, severity=severity,
                vendor_severity="" if rec.priority is None else f"priority {rec.priority}",
                status=status, active=not resolved,
                resolution=f"recommendation {status}" if resolved else "",
                tenant="contoso", attributes=attrs, raw=raw)


def _slow(source: AylieaSource, raw: Any) -> Item | str:
    """The path without `read`: pydantic, then the reference mapping; or what stops it."""
    try:
        if not isinstance(raw, dict):
            raise TypeError("not an object")
        rec = _Recommendation.model_validate(raw)
        item = _reference(source, raw, rec)
    except ROW_ERRORS as exc:
        return type(exc).__name__
    assert _fields(source._recommendation(raw, rec)) == _fields(item)
    return item


def _fields(item: Item) -> tuple[Any, ...]:
    return (*astuple(item), [(k, type(v), v) for k, v in item.attributes.items()])


def test_read_maps_every_row_as_the_model_would_or_leaves_it_to_the_model(
        source: AylieaSource) -> None:
    read = fast = 0
    for raw in rows():
        slow = _slow(source, raw)
        try:
            got: Item | str | None = source.read(raw)
        except ROW_ERRORS as exc:
            got = type(exc).__name__
        read += 1
        if got is None:
            continue  # left to the model: whatever it says stands
        fast += 1
        assert isinstance(slow, Item), (raw, got, slow)  # never accepts what the model refuses
        assert isinstance(got, Item) and _fields(got) == _fields(slow), raw
    assert fast > read / 4  # the shortcut is really taken (the usual shapes, and many others)


def test_a_page_reads_the_same_with_and_without_the_shortcut(source: AylieaSource) -> None:
    page = list(rows())
    common: dict[str, Any] = {"source": "ay", "kind": "recommendation",
                              "at": "recommendations", "first": 200}
    with_read = to_items(page, _Recommendation, source._recommendation, read=source.read,
                         **common)
    without = to_items(page, _Recommendation, source._recommendation, **common)
    assert len(with_read) == len(without) == len(page)
    for got, want in zip(with_read, without, strict=True):
        if isinstance(want, Unusable):
            assert got == want  # same key, same reason
        else:
            assert isinstance(got, Item) and _fields(got) == _fields(want)
    assert any(isinstance(r, Unusable) for r in without)
