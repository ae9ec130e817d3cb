"""Ayliea reads listed recommendations without pydantic (`AylieaSource.read`): that shortcut
must never accept a row `_Recommendation` refuses, nor map one differently.

Every field of a recommendation is given every shape a JSON vendor can send it (missing, null,
empty, text, numbers, booleans, lists, objects), one field at a time and in pairs; each row is
read both ways and the answers compared, attributes in order. Then the same rows go through
`to_items`, as a page does, against the path without `read`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bridge.http import HttpContext
from bridge.model import Item, JSONScalar, json_scalar
from bridge.sources.ayliea import AylieaConfig, AylieaSource, _Recommendation
from tests.support.row_shapes import check_page, check_read, shapes, slow_path
from tests.support.row_shapes import rows as shaped_rows

SHAPES = shapes("open", " Completed ", "dismissed", "2", 3, 9, 2.0, 2**70)
FIELDS = ("id", "status", "title", "priority", "framework_id", "category")
BASE: dict[str, Any] = {
    "id": "rec-1", "title": "Restrict model access", "priority": 2, "status": "open",
    "framework_id": "nist-ai-rmf", "category": "governance", "effort": "low",
}


def rows() -> Iterator[Any]:
    return shaped_rows(BASE, FIELDS, SHAPES, 12, ([], "rec-1", 7, None, True))


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


def test_read_maps_every_row_as_the_model_would_or_leaves_it_to_the_model(
        source: AylieaSource) -> None:
    check_read(source.read, slow_path(_Recommendation, source._recommendation,
                                      lambda raw, rec: _reference(source, raw, rec)), rows())


def test_a_page_reads_the_same_with_and_without_the_shortcut(source: AylieaSource) -> None:
    check_page(list(rows()), _Recommendation, source._recommendation, source.read, source="ay",
               kind="recommendation", at="recommendations", first=200)
