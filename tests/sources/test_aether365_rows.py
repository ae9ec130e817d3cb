"""Aether365 reads listed compliance results without pydantic (`_ResultReader.read`, 2,000 a
tenant and scan): that shortcut must never accept a row `_Result` refuses, nor map one
differently.

Every field of a result is given every shape a JSON vendor can send it (missing, null, empty,
text, numbers, booleans, lists, objects), one field at a time and in pairs; each row is read
both ways and the answers compared, attributes in order. Then the same rows go through
`to_items`, as a page does, against the path without `read`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge.model import Item, JSONScalar, Severity, json_scalar, normalize_severity
from bridge.sources.aether365 import _Result, _ResultReader, _Scan
from bridge.sources.rows import Remembered
from tests.support.row_shapes import check_page, check_read, shapes, slow_path
from tests.support.row_shapes import rows as shaped_rows

SHAPES = shapes("failed", " Passed ", "SKIPPED", "Critical")
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
    return shaped_rows(BASE, FIELDS, SHAPES, 9, ([], "r-1", 7, None, True))


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


@pytest.mark.parametrize("skipped_resolves", [True, False])
def test_read_maps_every_row_as_the_model_would_or_leaves_it_to_the_model(
        skipped_resolves: bool) -> None:
    reader = _reader(skipped_resolves)
    check_read(reader.read, slow_path(_Result, reader.to_item,
                                      lambda raw, row: _reference(raw, row, skipped_resolves)),
               rows())


def test_a_page_reads_the_same_with_and_without_the_shortcut() -> None:
    reader = _reader(True)
    check_page(list(rows()), _Result, reader.to_item, reader.read, source="a365",
               kind="test_result", at="data", id_field="test_id", first=200)


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
