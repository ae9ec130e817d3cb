"""ScanOrbit reads listed findings without pydantic (`ScanOrbitSource.read`, 100k a sweep):
that shortcut must never accept a row `_Finding` refuses, nor map one differently.

Every field of a finding is given every shape a JSON vendor can send it (missing, null, empty,
text, numbers, booleans, lists, objects), one field at a time and in pairs; each row is read
both ways and the answers compared, attributes in order. Then the same rows go through
`to_items`, as a page does, against the path without `read`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bridge.http import HttpContext
from bridge.model import Item, JSONScalar, json_scalar, normalize_severity
from bridge.sources.scanorbit import ScanOrbitConfig, ScanOrbitSource, _Finding
from tests.support.row_shapes import check_page, check_read, shapes, slow_path
from tests.support.row_shapes import rows as shaped_rows

SHAPES = shapes("OPEN", "Resolved", "snoozed", "trivial")
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
    yield from shaped_rows(BASE, FIELDS, (*SHAPES, *NESTED), 9, ([], "f-1", 7, None, True),
                           pair_fields=FIELDS[:5])
    yield {**BASE, "awsAccountId": "gone"}  # an account not listed
    yield {**BASE, "awsAccountId": "acct-2"}  # an account without a name


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


def test_read_maps_every_row_as_the_model_would_or_leaves_it_to_the_model(
        source: ScanOrbitSource) -> None:
    check_read(source.read, slow_path(_Finding, source.to_item,
                                      lambda raw, finding: _reference(source, raw, finding)),
               rows())


def test_a_page_reads_the_same_with_and_without_the_shortcut(source: ScanOrbitSource) -> None:
    check_page(list(rows()), _Finding, source.to_item, source.read, source="so",
               kind="finding", at="data", first=200)
