"""Webhook sink benchmark (issue: webhooks people act on).

Deliveries per second from the generic webhook sink to a receiver in another process (a
minimal HTTP/1.1 server on asyncio streams that counts what it accepted: an aiohttp server
costs about as much per request as our sender, and would measure itself), over keep-alive
connections with bounded concurrency: the sink alone (`WebhookSink.send` in the outbox
worker's batches), signed with a Standard Webhooks secret, and the whole path from a SQLite
outbox through the sink worker. Then the digest path: events per second from the outbox
through the grouper into digests of `max_batch` events.

Target on a 2-core machine (receiver and sender share them): >= 3,000 events/s for the
generic webhook from the outbox.

Run: `python -m bench.bench_webhook` or `python bench/run.py webhook`.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_syslog import make_events  # noqa: E402
from bench.harness import ServerProcess  # noqa: E402
from bridge.model import Event  # noqa: E402
from bridge.outbox import SinkWorker  # noqa: E402
from bridge.sinks.webhook import WebhookSink, WebhookSinkConfig  # noqa: E402
from bridge.store.sqlite import SQLiteStore  # noqa: E402

EVENTS = 20_000
OUTBOX_EVENTS = 20_000
DIGEST_EVENTS = 50_000
CONCURRENCY = 32
BATCH = 100  # the sink's default batch size
ROUNDS = 3
TARGET_EPS = 3_000
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()

# A minimal HTTP/1.1 keep-alive server on asyncio streams: it parses each request's headers
# and Content-Length body and counts the events (a digest's `count`), at a small fraction of
# the sender's cost per request, so the figures are the sink's, not the receiver's.
RECEIVER = textwrap.dedent("""
    import asyncio, json

    count = 0
    OK = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nContent-Type: text/plain\\r\\n\\r\\nok"

    def answer(text):
        body = text.encode()
        return (b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body)) + body

    async def serve(reader, writer):
        global count
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                lines = head.split(b"\\r\\n")
                method, path, _ = lines[0].split(b" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                if path == b"/hook":
                    if headers.get(b"webhook-id", b"").startswith(b"dg-"):
                        count += json.loads(body)["count"]
                    else:
                        count += 1
                    writer.write(OK)
                elif path == b"/count":
                    writer.write(answer(str(count)))
                else:
                    count = 0
                    writer.write(answer("0"))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())
""")


class Receiver(ServerProcess):
    """The receiving process: its own interpreter, its own core."""

    def __init__(self) -> None:
        super().__init__("-c", RECEIVER)
        self.base = f"http://127.0.0.1:{int(self.address)}"

    def count(self) -> int:
        with urllib.request.urlopen(f"{self.base}/count", timeout=10) as r:
            return int(r.read())

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.base}/reset", method="POST"),
                               timeout=10).close()



def config(rx: Receiver, **settings: object) -> WebhookSinkConfig:
    return WebhookSinkConfig.model_validate({
        "name": "bench", "type": "webhook", "url": f"{rx.base}/hook",
        "concurrency": CONCURRENCY, "batch_size": BATCH, **settings})


async def through_sink(sink: WebhookSink, events: Sequence[Event]) -> float:
    await sink.open()
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        await sink.send(events[i:i + BATCH])
    elapsed = time.perf_counter() - start
    await sink.close()
    return elapsed


async def through_outbox(settings: WebhookSinkConfig, events: Sequence[Event],
                         folder: Path) -> float:
    store = SQLiteStore(folder / "outbox.db")
    await store.open()
    try:
        for i in range(0, len(events), 5_000):
            await store.commit_chunk("bench", [], [(e, ["bench"]) for e in events[i:i + 5_000]])
        worker = SinkWorker(settings.build(), store)  # type: ignore[arg-type]
        start = time.perf_counter()
        left = await worker.drain()
        elapsed = time.perf_counter() - start
        if left:
            raise RuntimeError(f"{left} deliveries left in the outbox")
        return elapsed
    finally:
        await store.close()


def checked(rx: Receiver, expected: int) -> None:
    got = rx.count()
    if got != expected:
        raise RuntimeError(f"the receiver counted {got} events, expected {expected}")
    rx.reset()


def best(rounds: list[float], count: int) -> float:
    return count / min(rounds)


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    events = make_events(max(EVENTS, OUTBOX_EVENTS, DIGEST_EVENTS))
    gc.collect()
    gc.freeze()
    rx = Receiver()
    results: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
            folder = Path(tmp)
            for label, settings in (("sink", {}), ("sink, signed", {"signing_secrets": [SECRET]})):
                rounds = []
                for _ in range(ROUNDS):
                    rounds.append(asyncio.run(through_sink(config(rx, **settings).build(),
                                                           events[:EVENTS])))
                    checked(rx, EVENTS)
                results[label] = best(rounds, EVENTS)
            rounds = []
            for n in range(ROUNDS):
                run = folder / f"outbox-{n}"
                run.mkdir()
                rounds.append(asyncio.run(through_outbox(config(rx), events[:OUTBOX_EVENTS], run)))
                checked(rx, OUTBOX_EVENTS)
            results["outbox"] = best(rounds, OUTBOX_EVENTS)
            rounds = []
            for n in range(ROUNDS):
                run = folder / f"digest-{n}"
                run.mkdir()
                # No waiting (group_wait and group_interval ~0): this measures what the digest
                # path costs, not how long a group is told to wait.
                digests = config(rx, group_by=["severity"], group_wait=0, group_interval=0.001,
                                 max_batch=100, batch_size=1_000, group_buffer=20_000)
                rounds.append(asyncio.run(through_outbox(digests, events[:DIGEST_EVENTS], run)))
                checked(rx, DIGEST_EVENTS)
            results["digests"] = best(rounds, DIGEST_EVENTS)
    finally:
        rx.stop()
        gc.unfreeze()
    print(f"webhook: JSON POSTs to a minimal HTTP/1.1 receiver in another process on "
          f"127.0.0.1, keep-alive, concurrency {CONCURRENCY}, batches of {BATCH}, every event "
          f"counted by the receiver, best of {ROUNDS}")
    print(f"  sink alone          {results['sink']:>9,.0f} events/s   ({EVENTS:,} events)")
    print(f"  sink alone, signed  {results['sink, signed']:>9,.0f} events/s")
    print(f"  from the outbox     {results['outbox']:>9,.0f} events/s   (SQLite outbox -> "
          f"sink worker -> sink, {OUTBOX_EVENTS:,} events)")
    print(f"  digest path         {results['digests']:>9,.0f} events/s   (outbox -> grouper -> "
          f"digests of 100, group_by severity, {DIGEST_EVENTS:,} events)")
    ok = results["outbox"] >= TARGET_EPS
    print(f"  target >= {TARGET_EPS:,} events/s from the outbox: "
          f"{'met' if ok else 'MISSED'} ({results['outbox']:,.0f})")
    print(f"  {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
