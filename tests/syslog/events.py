"""Events with adversarial content: every character the formats must escape, line breaks, control
characters, non-ASCII of every UTF-8 width, and 10 KB fields whose truncation points fall inside
multi-byte characters and escape sequences. (No NUL: rsyslog turns it into `#000` on receipt.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from bridge.model import Event, EventType

SPECIALS = "pipe| equals= back\\slash newline\nCR\rtab\tend esc\x1b[31m é中😀 a\u0301 \\|\\=\\n \\"
TEN_KB_2 = "a" + "é" * 5120  # 2-byte chars: a cut at 512 or 1023 bytes lands mid-character
TEN_KB_3 = "ab" + "中" * 3400  # 3-byte chars: cut at 4000 bytes
TEN_KB_ESC = "k=\\|\n\r" * 1700  # every other character needs escaping
BASE_TIME = datetime(2024, 2, 29, 23, 59, 58, 987654, tzinfo=UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def event(**fields: Any) -> Event:
    values: dict[str, Any] = {
        "id": new_id(), "type": EventType.NEW, "source": "scanorbit", "vendor": "scanorbit",
        "scope": "scanorbit", "kind": "finding", "key": "F-1", "title": "S3 bucket is public",
        "severity": "high", "occurred_at": BASE_TIME, "counter": 1, "vendor_severity": "HIGH",
        "status": "open", "tenant": "acme",
        "attributes": {"region": "eu-west-1", "ip": "192.0.2.7", "host": "web-01",
                       "user": "alice"},
        "raw": {"url": "https://example.test/f/1", "agent": "scanner/1.0"},
    }
    values.update(fields)
    return Event(**values)


def adversarial_events() -> list[Event]:
    return [
        event(),
        event(
            title=SPECIALS, key=SPECIALS, tenant="ten|ant=\\", status="open|new\n",
            vendor_severity="HIGH=1", reason="why=\\|\r\nbecause", kind="find|ing=x",
            attributes={"ip": "2001:db8::1", "host": SPECIALS, "user": "ü=ser\\"},
            raw={"url": SPECIALS, "agent": "a=b|c\\d\n"},
        ),
        event(
            type=EventType.CHANGED, severity="critical", counter=7, title=TEN_KB_2,
            key=TEN_KB_3, status=TEN_KB_ESC, reason=TEN_KB_ESC[:3000],
            attributes={"ip": "not-an-ip", "host": TEN_KB_ESC[:6000], "user": TEN_KB_3[:400]},
            raw={"url": TEN_KB_3[:1500], "agent": TEN_KB_ESC[:1200]},
            changes={"severity": ("high", "critical")},
        ),
        event(
            type=EventType.RESOLVED, severity="info", tenant="", vendor_severity="",
            status="", reason="", counter=3, attributes={"resource_name": "bucket=1",
                                                         "user_principal_name": "bob@x.test"},
            raw={},
        ),
        event(type=EventType.REOPENED, severity="low", title="", attributes={}, raw={"url": ""}),
        event(severity="medium", title="trailing spaces  ", key="  leading",
              attributes={"host": " ", "user": "x "}),
    ]
