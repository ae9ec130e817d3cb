"""The reference peer: the poller a user would write over a weekend instead of running bridge.

Written plainly, neither tuned nor crippled: synchronous `requests`, the standard `json`
module, `sqlite3` upserts committed once per sweep, new and resolved findings by set
difference, changed ones by comparing the stored status and severity, and every event
appended to a JSON-lines file. No drift checks, retries, rate limits, outbox or routing: what
bridge's figures are compared with in `bench/bench_core.py` (issue 23), run in its own process
against the same simulator.

    python bench/peer.py URL API_KEY DB EVENTS --sweeps 2

prints one JSON object per sweep: {"sweep", "wall", "cpu", "findings", "events"}.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from datetime import UTC, datetime
from typing import Any

import requests


def fetch_all(session: requests.Session, url: str) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = []
    page, pages = 1, 1
    while page <= pages:
        resp = session.get(f"{url}/findings", params={"page": page, "limit": 100}, timeout=30)
        resp.raise_for_status()
        body = json.loads(resp.content)
        findings.extend(body["data"])
        pages = body["pagination"]["totalPages"]
        page += 1
    return findings


def sweep(session: requests.Session, url: str, db: sqlite3.Connection,
          events_path: str) -> dict[str, int]:
    findings = fetch_all(session, url)
    known = {row[0]: (row[1], row[2]) for row in
             db.execute("SELECT id, status, severity FROM findings WHERE state = 'open'")}
    now = datetime.now(UTC).isoformat()
    events = []
    seen = set()
    for f in findings:
        seen.add(f["id"])
        old = known.get(f["id"])
        if old is None:
            events.append({"type": "new", "id": f["id"], "at": now, "finding": f})
        elif old != (f["status"], f.get("severity")):
            events.append({"type": "changed", "id": f["id"], "at": now, "finding": f})
        db.execute(
            "INSERT INTO findings (id, status, severity, state, data, seen_at) "
            "VALUES (?, ?, ?, 'open', ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "status = excluded.status, severity = excluded.severity, state = 'open', "
            "data = excluded.data, seen_at = excluded.seen_at",
            (f["id"], f["status"], f.get("severity"), json.dumps(f), now),
        )
    for gone in set(known) - seen:
        events.append({"type": "resolved", "id": gone, "at": now})
        db.execute("UPDATE findings SET state = 'resolved' WHERE id = ?", (gone,))
    db.commit()
    with open(events_path, "a", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(event) + "\n")
    return {"findings": len(findings), "events": len(events)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("api_key")
    parser.add_argument("db")
    parser.add_argument("events")
    parser.add_argument("--sweeps", type=int, default=2)
    args = parser.parse_args()
    db = sqlite3.connect(args.db)
    db.execute("CREATE TABLE IF NOT EXISTS findings (id TEXT PRIMARY KEY, status TEXT, "
               "severity TEXT, state TEXT, data TEXT, seen_at TEXT)")
    session = requests.Session()
    session.headers["X-API-Key"] = args.api_key
    for n in range(1, args.sweeps + 1):
        cpu, wall = time.process_time(), time.perf_counter()
        counts = sweep(session, args.url, db, args.events)
        print(json.dumps({"sweep": n, "wall": time.perf_counter() - wall,
                          "cpu": time.process_time() - cpu, **counts}), flush=True)
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
