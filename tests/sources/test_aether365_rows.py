"""Aether365 reads listed compliance results without pydantic (`_ResultReader.read`, 2,000 a
tenant and scan): that shortcut must never accept a row `_Result` refuses, nor map one
differently.

Every field of a result is given every shape a JSON vendor can send it (missing, null, empty,
text, numbers, booleans, lists, objects), one field at a time and in pairs; each row is read
both ways and the answers compared, attributes in order. Then the same rows go through
`to_items`, as a page does, against the path without `read`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import astuple
from typing import Any

import pytest

from bridge.model import Item, JSONScalar, Severity, json_scalar, normalize_severity
from bridge.sources.aether365 import _Result, _ResultReader, _Scan
from bridge.sources.rows import ROW_ERRORS, Remembered, Unusable, to_items

_MISSING = object()
SHAPES: tuple[Any, ...] = (_MISSING, None, "", "x", "failed", " Passed ", "SKIPPED", "Critical",
                           "ünï\ufffd", 0, 1, -1, 1.5, 2**63, True, False, [], ["a"], {},
                           {"a": [1, {"b": None}]})
FIELDS = ("id", "test_id", "result", "title", "severity", "framework", "source_tool",
          "help_url")
BASE: dict[str, Any] = {
    "id": "r-1", "scan_id": "s-1", "test_id": "AE.1001", "title": "MFA for admins",
    "result": "failed", "severity": "high", "framework": "CIS",
    "help_url": "https://docs.aether365.io/tests/AE.1001", "remediation_steps": "Fix it.",
    "source_tool": "maester",
}
SCAN = _Scan(id="s-1", status="completed", scan_type="compliance",
             completed_at="2026-01-01T00:00:00Z")


def rows() -> Iterator[Any]:
    yield BASE
    yield from ([], "r-1", 7, None, True)  # not objects at all
    for field in FIELDS:
        for shape in SHAPES:
            yield _with(BASE, {field: shape})
    for a, b in itertools.combinations(FIELDS, 2):
        for x, y in itertools.product(SHAPES[:9], repeat=2):
            yield _with(BASE, {a: x, b: y})


def _with(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    row = dict(base)
    for k, v in changes.items():
        if v is _MISSING:
            row.pop(k, None)
        else:
            row[k] = v
    return row


def _reader(skipped_resolves: bool) -> _ResultReader:
    return _ResultReader("contoso", SCAN, skipped_resolves, Remembered(normalize_severity))


def _reference(raw: dict[str, Any], row: _Result, skipped_resolves: bool) -> Item:
    """A result as an item, plainly (as it was written before it was tuned): the
    specification `_ResultReader._map` is held to."""
    result = row.result.strip().lower()
    judged = result in ("failed", "passed") or (result == "skipped" and skipped_resolves)
    attrs: dict[str, JSONScalar] = {n: json_scalar(raw[n])
                                    for n in ("framework", "source_tool", "help_url")
                                    if raw.get(n) is not None}
    attrs.update(scan_id=SCAN.id, scan_completed_at=SCAN.completed_at)
    severity: Severity = normalize_severity(row.severity)
    return Item(kind="test_result", key=row.test_id, title=row.title or row.test_id,
                severity=severity, vendor_severity=row.severity or "", status=result,
                active=result == "failed", judged=judged,
                resolution=f"test {result} in scan {SCAN.id}" if result != "failed" else "",
                tenant="contoso", attributes=attrs, raw=raw)


def _slow(reader: _ResultReader, raw: Any, skipped_resolves: bool) -> Item | str:
    """The path without `read`: pydantic, then the reference mapping; or what stops it."""
    try:
        if not isinstance(raw, dict):
            raise TypeError("not an object")
        row = _Result.model_validate(raw)
        item = _reference(raw, row, skipped_resolves)
    except ROW_ERRORS as exc:
        return type(exc).__name__
    assert _fields(reader.to_item(raw, row)) == _fields(item)
    return item


def _fields(item: Item) -> tuple[Any, ...]:
    return (*astuple(item), list(item.attributes.items()))


@pytest.mark.parametrize("skipped_resolves", [True, False])
def test_read_maps_every_row_as_the_model_would_or_leaves_it_to_the_model(
        skipped_resolves: bool) -> None:
    reader = _reader(skipped_resolves)
    read = fast = 0
    for raw in rows():
        slow = _slow(reader, raw, skipped_resolves)
        try:
            got: Item | str | None = reader.read(raw)
        except ROW_ERRORS as exc:
            got = type(exc).__name__
        read += 1
        if got is None:
            continue  # left to the model: whatever it says stands
        fast += 1
        assert isinstance(slow, Item), (raw, got, slow)  # never accepts what the model refuses
        assert isinstance(got, Item) and _fields(got) == _fields(slow), raw
    assert fast > read / 4  # the shortcut is really taken (the usual shapes, and many others)


def test_a_page_reads_the_same_with_and_without_the_shortcut() -> None:
    reader = _reader(True)
    page = list(rows())
    common: dict[str, Any] = {"source": "a365", "kind": "test_result", "at": "data",
                              "id_field": "test_id", "first": 200}
    with_read = to_items(page, _Result, reader.to_item, read=reader.read, **common)
    without = to_items(page, _Result, reader.to_item, **common)
    assert len(with_read) == len(without) == len(page)
    for got, want in zip(with_read, without, strict=True):
        if isinstance(want, Unusable):
            assert got == want  # same key, same reason ("data.3.result: Input should be ...")
        else:
            assert isinstance(got, Item) and _fields(got) == _fields(want)
    assert any(isinstance(r, Unusable) for r in without)


def test_remembered_words_are_bounded() -> None:
    """A vendor sending a new word every row must not grow the memory of words."""
    seen: list[str] = []

    def upper(word: str) -> str:
        seen.append(word)
        return word.upper()

    words: Remembered[str, str] = Remembered(upper, bound=3)
    assert [words[w] for w in ("a", "b", "a", "c", "d", "d")] == ["A", "B", "A", "C", "D", "D"]
    assert dict(words) == {"a": "A", "b": "B", "c": "C"}  # "d" computed each time, not kept
    assert seen == ["a", "b", "c", "d", "d"]
