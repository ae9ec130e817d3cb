"""Jira sink benchmark (issue 17).

5,000 `new` events of 5,000 items, committed to a SQLite outbox and delivered by the sink
worker through the Jira sink (concurrency 8) to the fake Jira (tests/support/fake_jira.py) in
another process, answering every request after 20 ms. Reports ticket operations per second
and the requests Jira saw per ticket, startup checks excluded.

Targets: >= 150 ticket operations/s; 1 create and 0 searches per ticket on the crash-free
path (the ledger writes an intent before each create and the key after it: no search is
needed to know a ticket exists).

Run: `python -m bench.bench_jira` or `python bench/run.py jira`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import ServerProcess  # noqa: E402
from bridge.model import Event, EventType  # noqa: E402
from bridge.outbox import SinkWorker  # noqa: E402
from bridge.sinks.jira.config import JiraSinkConfig  # noqa: E402
from bridge.sinks.jira.service import JiraSink  # noqa: E402
from bridge.store.base import SweepCommit, SweepRecord  # noqa: E402
from bridge.store.sqlite import SQLiteStore  # noqa: E402
from tests.core._helpers import T0, make_event  # noqa: E402
from tests.support.fake_jira import FakeJira  # noqa: E402

ITEMS = 5_000
CONCURRENCY = 8
LATENCY = 0.020
TARGET_OPS = 150
CHECK_ROUTES = ("serverInfo", "myself", "project", "priority", "field")


def events(n: int) -> list[Event]:
    return [make_event(f"F-{i:05d}", type_=EventType.NEW, severity="high") for i in range(n)]


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_fake/stats", timeout=10) as answer:
        found: dict[str, Any] = json.loads(answer.read())
    return found


async def run(url: str, workdir: Path) -> dict[str, float]:
    defaults = FakeJira()
    store = SQLiteStore(workdir / "bridge.db")
    await store.open()
    try:
        batch = events(ITEMS)
        await store.commit_sweep(SweepCommit(
            record=SweepRecord(scope="bench", source="so", started_at=T0, finished_at=T0,
                               outcome="complete", events=len(batch)),
            deliveries=[(e, ["jira"]) for e in batch]))
        config = JiraSinkConfig.model_validate({
            "name": "jira", "type": "jira", "url": url, "email": defaults.email,
            "api_token": defaults.token, "project": defaults.project,
            "concurrency": CONCURRENCY, "timeout": 30})
        sink = JiraSink(config)
        worker = SinkWorker(sink, store)  # binds the store: the ledger lives there
        await sink.open()  # startup checks, outside the timed part
        started = time.perf_counter()
        left = await worker.drain()
        elapsed = time.perf_counter() - started
        refs = await store.sink_refs("jira", state="ticket", limit=-1)
    finally:
        await store.close()
    seen = stats(url)
    requests = {k: v for k, v in seen["requests"].items()
                if not any(r in k for r in CHECK_ROUTES)}
    creates = sum(v for k, v in requests.items() if k.startswith("POST") and k.endswith("/issue"))
    searches = sum(v for k, v in requests.items() if "/search" in k)
    return {"elapsed": elapsed, "left": left, "tickets": seen["tickets"], "ledger": len(refs),
            "ops_per_s": ITEMS / elapsed, "creates_per_ticket": creates / ITEMS,
            "searches_per_ticket": searches / ITEMS,
            "requests_per_ticket": sum(requests.values()) / ITEMS,
            "violations": len(seen["violations"])}


def main() -> int:
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    with (ServerProcess("-m", "tests.support.fake_jira", "--latency", str(LATENCY)) as fake,
          tempfile.TemporaryDirectory() as tmp):
        result = asyncio.run(run(fake.address, Path(tmp)))
    print(f"jira: {ITEMS} new items, concurrency {CONCURRENCY}, Jira answering in "
          f"{LATENCY * 1000:.0f} ms (fake in another process)")
    print(f"  {result['ops_per_s']:.0f} ticket operations/s ({result['elapsed']:.1f} s), "
          f"target >= {TARGET_OPS}")
    print(f"  per ticket: {result['creates_per_ticket']:.2f} create, "
          f"{result['searches_per_ticket']:.2f} searches, {result['requests_per_ticket']:.2f} "
          "requests in all (target: 1 create, 0 searches)")
    print(f"  tickets in Jira {result['tickets']}, in the ledger {result['ledger']}, left in "
          f"the outbox {result['left']}, contract violations {result['violations']}")
    ok = (result["ops_per_s"] >= TARGET_OPS and result["creates_per_ticket"] == 1
          and result["searches_per_ticket"] == 0 and result["tickets"] == ITEMS
          and result["left"] == 0 and result["violations"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
