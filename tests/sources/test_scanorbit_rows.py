"""ScanOrbit reads listed findings without pydantic (`ScanOrbitSource.read`, 100k a sweep):
that shortcut must never accept a row `_Finding` refuses, nor map one differently.

Every field of a finding is given every shape a JSON vendor can send it (missing, null, empty,
text, numbers, booleans, lists, objects), one field at a time and in pairs; each row is read
both ways and the answers compared, attributes in order. Then the same rows go through
`to_items`, as a page does, against the path without `read`.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import astuple
from typing import Any

import pytest

from bridge.http import HttpContext
from bridge.model import Item, JSONScalar, json_scalar, normalize_severity
from bridge.sources.rows import ROW_ERRORS, Unusable, to_items
from bridge.sources.scanorbit import ScanOrbitConfig, ScanOrbitSource, _Finding

_MISSING = object()
SHAPES: tuple[Any, ...] = (_MISSING, None, "", "x", "OPEN", "Resolved", "snoozed", "trivial",
                           "ünï\ufffd", 0, 1, -1, 1.5, 2**63, True, False, [], ["a"], {},
                           {"a": [1, {"b": None}]})
FIELDS = ("id", "status", "severity", "summary", "type", "awsAccountId", "resourceId",
          "certificateId", "firstDetectedAt", "resource", "certificate")
BASE: dict[str, Any] = {
    "id": "f-1", "orgId": "o-1", "awsAccountId": "acct-1", "resourceId": "r-1",
    "certificateId": None, "type": "s3_public", "severity": "high",
    "summary": "Bucket is public", "details": {"bucket": "b"}, "status": "open",
    "firstDetectedAt": "2026-01-01T00:00:00Z",
}
NESTED = ({"name": "web", "service": "ec2", "region": 5, "resourceId": ["r"]},
          {"primaryDomain": "example.com", "notAfter": None})


def rows() -> Iterator[Any]:
    yield BASE
    yield from ([], "f-1", 7, None, True)  # not objects at all
    for field in FIELDS:
        for shape in (*SHAPES, *NESTED):
            yield _with(BASE, {field: shape})
    for a, b in itertools.combinations(FIELDS[:5], 2):
        for x, y in itertools.product(SHAPES[:9], repeat=2):
            yield _with(BASE, {a: x, b: y})
    yield {**BASE, "awsAccountId": "gone"}  # an account not listed
    yield {**BASE, "awsAccountId": "acct-2"}  # an account without a name


def _with(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    row = dict(base)
    for k, v in changes.items():
        if v is _MISSING:
            row.pop(k, None)
        else:
            row[k] = v
    return row


@pytest.fixture
async def source() -> AsyncIterator[ScanOrbitSource]:
    http = HttpContext()
    config = ScanOrbitConfig.model_validate({
        "name": "so", "type": "scanorbit", "api_key": "sk_live_" + "0123456789" * 2,
        "tenant": "contoso", "inactive_statuses": ["resolved", "snoozed"]})
    src = ScanOrbitSource(config, http)
    src._accounts = {"acct-1": {"aws_account_number": "123456789012", "account_name": "prod"},
                     "acct-2": {"aws_account_number": "210987654321"}}
    yield src
    await http.close()


def _slow(source: ScanOrbitSource, raw: Any) -> Item | str:
    """The path without `read`: pydantic, then the mapping as it was written before it was
    tuned (`_reference`); or what stops it."""
    try:
        if not isinstance(raw, dict):
            raise TypeError("not an object")
        finding = _Finding.model_validate(raw)
        item = _reference(source, raw, finding)
    except ROW_ERRORS as exc:
        return type(exc).__name__
    assert _fields(source.to_item(raw, finding)) == _fields(item)
    return item


def _reference(source: ScanOrbitSource, raw: dict[str, Any], finding: _Finding) -> Item:
    """A finding as an item, plainly: the specification the tuned `_map` is held to."""
    status = finding.status.lower()
    attrs: dict[str, JSONScalar] = {}
    for k in ("type", "awsAccountId", "resourceId", "certificateId", "firstDetectedAt"):
        if raw.get(k) is not None:
            attrs[k] = json_scalar(raw[k])
    for nested, fields in (("resource", ("name", "service", "region", "resourceId")),
                           ("certificate", ("primaryDomain", "notAfter"))):
        obj = raw.get(nested)
        if isinstance(obj, dict):
            for f in fields:
                if isinstance(obj.get(f), str):
                    attrs[f"{nested}_{f}"] = obj[f]
    account_id = raw.get("awsAccountId")
    if isinstance(account_id, str):
        attrs.update(source._accounts.get(account_id, {}))
    inactive = status in source.config.inactive_statuses
    return Item(kind="finding", key=finding.id,
                title=finding.summary or finding.type or finding.id,
                severity=normalize_severity(finding.severity),
                vendor_severity=finding.severity or "", status=status, active=not inactive,
                resolution=f"vendor status {status}" if inactive else "",
                tenant=source.config.tenant, attributes=attrs, raw=raw)


def _fields(item: Item) -> tuple[Any, ...]:
    return (*astuple(item), list(item.attributes.items()))


def test_read_maps_every_row_as_the_model_would_or_leaves_it_to_the_model(
        source: ScanOrbitSource) -> None:
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


def test_a_page_reads_the_same_with_and_without_the_shortcut(source: ScanOrbitSource) -> None:
    page = list(rows())
    common: dict[str, Any] = {"source": "so", "kind": "finding", "at": "data", "first": 200}
    with_read = to_items(page, _Finding, source.to_item, read=source.read, **common)
    without = to_items(page, _Finding, source.to_item, **common)
    assert len(with_read) == len(without) == len(page)
    for got, want in zip(with_read, without, strict=True):
        if isinstance(want, Unusable):
            assert got == want  # same key, same reason ("data.3.status: Input should be ...")
        else:
            assert isinstance(got, Item) and _fields(got) == _fields(want)
    assert any(isinstance(r, Unusable) for r in without)
