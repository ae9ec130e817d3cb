"""How stored items read to an operator (`bridge state items`): the columns that say where an
item stands, plus the title and severity dug out of its last snapshot. Written once over
`ItemRecord`s, so no backend formats anything."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from bridge.store.base import ItemRecord


def item_rows(records: Iterable[ItemRecord]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        snapshot = orjson.loads(r.snapshot)
        out.append({
            "scope": r.scope, "kind": r.kind, "key": r.key, "state": r.state,
            "counter": r.counter, "misses": r.misses, "first_seen": _iso(r.first_seen),
            "changed_at": _iso(r.changed_at), "resolved_at": _iso(r.resolved_at),
            "title": snapshot.get("title", ""), "severity": snapshot.get("severity", ""),
        })
    return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
