"""What the formats must carry for an event, restated from the issue and the specs (field choice,
CEF length limits, escaping of header fields) without using the production encoders."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bridge.model import Event

SCORES = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
SYSLOG_SEVERITY = {"info": 6, "low": 5, "medium": 4, "high": 3, "critical": 2}
LOCAL4 = 20


def cut(text: str, max_bytes: int | None) -> str:
    """Longest prefix whose UTF-8 form has at most `max_bytes` bytes, whole code points only."""
    if max_bytes is None:
        return text
    total = 0
    for index, char in enumerate(text):
        total += len(char.encode("utf-8"))
        if total > max_bytes:
            return text[:index]
    return text


def header_text(text: str) -> str:
    """CEF/LEEF header fields cannot break lines: line breaks become spaces."""
    return text.replace("\r", " ").replace("\n", " ")


def leef_header_text(text: str) -> str:
    """LEEF header fields cannot hold a tab either (it could pass for the delimiter)."""
    return header_text(text).replace("\t", " ")


def text_of(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def epoch_ms(moment: datetime) -> str:
    return str(int(moment.astimezone(UTC).timestamp() * 1000))


def first(event: Event, *attributes: str) -> str | None:
    for name in attributes:
        text = text_of(event.attributes.get(name))
        if text is not None:
            return text
    return None


def is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# Issue 21: the header names the originating vendor's device (SIEMs pick parsers by it); an
# unknown vendor names itself, an event without one names bridge.
DEVICES = {"scanorbit": "ScanOrbit", "aether365": "Aether365", "ayliea": "Ayliea"}


def device_name(event: Event) -> str:
    return DEVICES.get(event.vendor) or event.vendor or "bridge"


# Where each source puts an address, a host, a user, a URL (Aether365 keeps Graph's camelCase).
IPS = ("ip", "ip_address", "ipAddress")
HOSTS = ("host", "resource_name", "certificate_primaryDomain")
USERS = ("user", "user_principal_name", "userPrincipalName")
URLS = ("url", "help_url")


def cef_header(event: Event) -> dict[str, str]:
    name = header_text(cut(device_name(event), 63))
    return {
        "version": "0", "vendor": name, "product": name, "device_version": "0.1.0",
        "signature": header_text(cut(f"{event.kind}:{event.type.value}", 1023)),
        "name": header_text(cut(event.title, 512)),
        "severity": str(SCORES[event.severity]),
    }


def cef_extensions(event: Event, extra: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The default CefConfig's extension list, in order; `extra` adds raw mappings
    (key -> attribute of raw, limited to 1023 bytes as non-dictionary keys are)."""
    ext = [("rt", epoch_ms(event.occurred_at)), ("act", event.type.value),
           ("externalId", cut(event.id, 40)), ("cat", cut(event.kind, 1023))]
    for key, value in (("msg", event.title), ("reason", event.reason)):
        if value:
            ext.append((key, cut(value, 1023)))
    src = first(event, *IPS)
    if src is not None and is_ip(src):
        ext.append(("src", src))
    for key, names in (("dhost", HOSTS), ("duser", USERS), ("request", URLS)):
        value = first(event, *names)
        if value is not None:
            ext.append((key, cut(value, 1023)))
    for key, path in (extra or {}).items():
        value = text_of(event.raw.get(path))
        if value is not None:
            ext.append((key, cut(value, 1023)))
    customs = [("source", event.source), ("tenant", event.tenant),
               ("vendorSeverity", event.vendor_severity), ("status", event.status),
               ("AWS Account", first(event, "aws_account_number")),
               ("Cloud Region", first(event, "region", "resource_region"))]
    for i, (label, value) in enumerate(customs, start=1):
        if value:
            ext += [(f"cs{i}Label", label), (f"cs{i}", cut(value, 4000))]
    ext += [("cn1Label", "transitionCounter"), ("cn1", str(event.counter))]
    for i, (label, value) in enumerate((("itemKey", event.key), ("itemUid", event.item_uid)),
                                       start=1):
        if value:
            ext += [(f"flexString{i}Label", label), (f"flexString{i}", cut(value, 1023))]
    return ext


def leef_time(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def leef_attributes(event: Event) -> list[tuple[str, str]]:
    attrs = [("devTime", leef_time(event.occurred_at)),
             ("devTimeFormat", "yyyy-MM-dd'T'HH:mm:ss.SSSZ"), ("externalId", event.id),
             ("sev", str(SCORES[event.severity])), ("cat", event.kind)]
    plain = [("eventType", event.type.value), ("source", event.source),
             ("vendor", event.vendor), ("tenant", event.tenant), ("itemKey", event.key),
             ("itemUid", event.item_uid), ("title", event.title),
             ("vendorSeverity", event.vendor_severity), ("status", event.status),
             ("reason", event.reason), ("counter", str(event.counter))]
    attrs += [(k, v) for k, v in plain if v]
    src = first(event, *IPS)
    if src is not None and is_ip(src):
        attrs.append(("src", src))
    for key, names in (("identHostName", HOSTS), ("usrName", USERS), ("url", URLS),
                       ("accountName", ("account_name",)),
                       ("resource", ("resource_resourceId", "resource_id")),
                       ("awsAccount", ("aws_account_number",)),
                       ("region", ("region", "resource_region"))):
        value = first(event, *names)
        if value is not None:
            attrs.append((key, value))
    return attrs


def json_object(event: Event) -> dict[str, Any]:
    """The stable JSON shape, spelled out field by field."""
    return {
        "id": event.id, "type": event.type.value, "source": event.source,
        "vendor": event.vendor, "scope": event.scope, "tenant": event.tenant,
        "kind": event.kind, "key": event.key, "item_uid": event.item_uid,
        "title": event.title, "severity": event.severity,
        "severity_score": SCORES[event.severity], "vendor_severity": event.vendor_severity,
        "status": event.status, "reason": event.reason, "counter": event.counter,
        "occurred_at": event.occurred_at.isoformat(),
        "changes": {k: list(v) for k, v in event.changes.items()},
        "attributes": dict(event.attributes), "raw": dict(event.raw),
    }


def pri(event: Event) -> int:
    return LOCAL4 * 8 + SYSLOG_SEVERITY[event.severity]


def stamp_5424(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def stamp_3164(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return f"{months[moment.month - 1]} {moment.day:2d} {moment.strftime('%H:%M:%S')}"
