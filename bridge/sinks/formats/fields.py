"""Field paths (`title`, `attributes.region`, `raw.resource.arn`, `changes.severity`) and the
field-map settings CEF and LEEF share: which key carries which event value."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import Field, field_validator

from bridge.components import StrictModel
from bridge.model import Event
from bridge.sinks.formats.common import PART_KEY

Getter = Callable[[Event], Any]

# Event attributes a dotted path may start with; `attributes.x`, `raw.a.b` and `changes.f` reach
# into the mappings.
EVENT_FIELDS = frozenset({
    "id", "type", "source", "vendor", "scope", "kind", "key", "title", "severity",
    "severity_score", "occurred_at", "counter", "vendor_severity", "status", "tenant", "reason",
    "item_uid",
})
# Event fields that always hold a str (`type` is a StrEnum), or an int.
STR_FIELDS = frozenset({"id", "source", "vendor", "scope", "kind", "key", "title", "severity",
                        "vendor_severity", "status", "tenant", "reason", "item_uid"})
INT_FIELDS = frozenset({"counter", "severity_score"})
KEY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")


def dig(data: Any, parts: Sequence[str]) -> Any:
    """`data[a][b][0]...`, or None where the path leaves the data."""
    for part in parts:
        if isinstance(data, Mapping):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def change(event: Event, name: str) -> Any:
    """`[before, after]` of a changed field, or None."""
    pair = event.changes.get(name)
    return None if pair is None else list(pair)


def compile_path(path: str) -> Getter:
    """`title`, `attributes.region`, `raw.resource.arn`, `changes.severity` -> a getter."""
    head, _, rest = path.partition(".")
    if head == "attributes" and rest:
        return lambda e: e.attributes.get(rest)
    if head == "raw" and rest:
        parts = rest.split(".")
        return lambda e: dig(e.raw, parts)
    if head == "changes" and rest:
        return lambda e: change(e, rest)
    if head in EVENT_FIELDS and not rest:
        if head == "type":
            return lambda e: e.type.value
        return lambda e: getattr(e, head)
    raise ValueError(
        f"unknown field path {path!r}: use an event field ({', '.join(sorted(EVENT_FIELDS))}), "
        "attributes.<name>, raw.<a.b.c> or changes.<field>"
    )


# A key's value: one path, or several meaning "the first one that has a value".
FieldMap = dict[str, str | list[str]]


def paths_of(value: str | list[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


class CustomField(StrictModel):
    """A CEF custom field (`cs1`/`cs1Label`...): what it means and where its value comes from
    (one path, or several meaning "the first one that has a value")."""

    label: str = Field(min_length=1, max_length=1023)
    path: str | list[str]

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | list[str]) -> str | list[str]:
        if not paths_of(value):
            raise ValueError("path must name at least one field")
        for path in paths_of(value):
            compile_path(path)
        return value


def check_field_map(fields: FieldMap, reserved: frozenset[str]) -> FieldMap:
    """Keys are identifiers the encoder does not set itself; every path resolves."""
    for key, paths in fields.items():
        if not KEY_PATTERN.match(key):
            raise ValueError(f"field key {key!r} must be letters, digits and _ (starting a letter)")
        if key in reserved or key == PART_KEY:
            raise ValueError(f"field key {key!r} is set by the encoder itself")
        for path in paths_of(paths):
            compile_path(path)
    return fields


# Where the sources put an address, a host, a user... in the order to try them. Each source's
# attribute names are listed (Aether365 keeps Microsoft Graph's camelCase `userPrincipalName`,
# `ipAddress`): `tests/siem/test_field_map.py` runs every source kind through the default
# encoders and fails when an attribute with a standard key does not land in it.
CANDIDATES: Mapping[str, list[str]] = {
    "ip": ["attributes.ip", "attributes.ip_address", "attributes.ipAddress"],
    "host": ["attributes.host", "attributes.resource_name", "attributes.certificate_primaryDomain"],
    "user": ["attributes.user", "attributes.user_principal_name", "attributes.userPrincipalName"],
    "url": ["attributes.url", "attributes.help_url"],
    "account": ["attributes.aws_account_number"],
    "account_name": ["attributes.account_name"],
    "region": ["attributes.region", "attributes.resource_region"],
    "resource": ["attributes.resource_resourceId", "attributes.resource_id"],
}
