"""Syslog sink benchmark (issue: SIEM sinks).

Events per second through `SyslogSink.send`, in batches the way the outbox worker hands them
over, into a real rsyslogd on 127.0.0.1 over TCP and TLS (rsyslogd writes every message to a
file, and the run checks that every one arrived), printed next to a raw-socket baseline that
writes the same pre-formatted bytes in the same run.

Targets on a 2-core machine: >= 50,000 events/s over TCP, and >= 50% of the raw baseline.

Run: `python -m bench.bench_syslog` or `python bench/bench_syslog.py`; needs rsyslogd and
rsyslog-gnutls. The events are built up front and then frozen out of the garbage collector's
view, as in the daemon, where only the batch in flight is alive.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog
import trustme

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.model import Event, EventType  # noqa: E402
from bridge.sinks.syslog import SyslogSink, SyslogSinkConfig  # noqa: E402
from tests.support.rsyslogd import Rsyslogd, TlsFiles, find_rsyslogd  # noqa: E402

EVENTS = 200_000
OUTBOX_EVENTS = 50_000
BATCH = SyslogSinkConfig.model_fields["batch_size"].default  # the sink's default batch size
ROUNDS = 3
TARGET_EPS = 50_000
TARGET_RATIO = 0.5


def make_events(count: int) -> list[Event]:
    """ScanOrbit-like findings: a realistic title, attributes and a vendor payload."""
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    services = ("s3", "ec2", "iam", "rds", "lambda")
    out = []
    for i in range(count):
        service = services[i % 5]
        raw = {"id": f"F-{i:08d}", "type": f"{service}-public-access", "severity": "HIGH",
               "status": "OPEN", "summary": f"{service} resource prod-{i} is publicly reachable",
               "resource": {"name": f"prod-{i}", "service": service, "region": "eu-west-1"},
               "awsAccountId": "123456789012", "firstDetectedAt": "2024-04-30T08:00:00Z"}
        out.append(Event(
            id=f"{i:032x}", type=EventType.NEW if i % 4 else EventType.CHANGED,
            source="scanorbit", vendor="scanorbit", scope="scanorbit", kind="finding",
            key=raw["id"], title=raw["summary"], severity=("high", "medium", "critical")[i % 3],
            occurred_at=now, counter=1 + i % 3, vendor_severity="HIGH", status="open",
            tenant="acme", reason="",
            attributes={"type": raw["type"], "awsAccountId": "123456789012",
                        "resource_name": f"prod-{i}", "resource_region": "eu-west-1"},
            raw=raw,
        ))
    return out


def batches(events: Sequence[Event]) -> list[Sequence[Event]]:
    return [events[i:i + BATCH] for i in range(0, len(events), BATCH)]


async def through_sink(sink: SyslogSink, work: list[Sequence[Event]]) -> float:
    await sink.open()
    start = time.perf_counter()
    for batch in work:
        await sink.send(batch)
    elapsed = time.perf_counter() - start
    await sink.close()
    return elapsed


def raw_socket(port: int, payloads: list[bytes], ctx: ssl.SSLContext | None) -> float:
    """The floor: the same bytes, already formatted, through a plain blocking socket."""
    sock = socket.create_connection(("127.0.0.1", port))
    if ctx is not None:
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
    start = time.perf_counter()
    for payload in payloads:
        sock.sendall(payload)
    elapsed = time.perf_counter() - start
    sock.close()
    return elapsed


def wait_delivered(daemon: Rsyslogd, name: str, count: int, timeout: float = 60) -> None:
    """Every message written by rsyslogd (one line each), then start the next round afresh."""
    path = daemon.output(name)
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_bytes().count(b"\n") if path.exists() else 0
        if lines >= count:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"rsyslogd wrote {lines} of {count} messages")
        time.sleep(0.05)
    if path.exists():
        os.truncate(path, 0)


def measure(daemon: Rsyslogd, protocol: str, fmt: str, events: list[Event],
            certs: dict[str, Path]) -> tuple[float, float, int]:
    """Best-of-rounds events/s for the sink and for the raw socket, and bytes per event."""
    settings: dict[str, object] = {
        "name": "bench", "type": "syslog", "host": "127.0.0.1", "protocol": protocol,
        "port": daemon.ports[protocol], "format": fmt,
    }
    ctx = None
    if protocol == "tls":
        settings.update(ca_bundle=str(certs["ca"]), server_name="localhost")
        ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    config = SyslogSinkConfig.model_validate(settings)
    work = batches(events)
    payloads = [b"".join(config.build().frame(batch)[0]) for batch in work]
    size = sum(len(p) for p in payloads)
    wait_delivered(daemon, protocol, 0)
    sink_best = raw_best = 0.0
    for _ in range(ROUNDS):
        raw_best = max(raw_best, len(events) / raw_socket(daemon.ports[protocol], payloads, ctx))
        wait_delivered(daemon, protocol, len(events))
        sink = config.build()
        sink_best = max(sink_best, len(events) / asyncio.run(through_sink(sink, work)))
        wait_delivered(daemon, protocol, len(events))
    return sink_best, raw_best, size // len(events)


async def through_outbox(daemon: Rsyslogd, events: list[Event], folder: Path) -> float:
    """The whole delivery path for context: SQLite outbox -> sink worker -> sink -> rsyslogd."""
    from bridge.outbox import SinkWorker
    from bridge.store.sqlite import SQLiteStore

    store = SQLiteStore(folder / "outbox.db")
    await store.open()
    try:
        for i in range(0, len(events), 5_000):
            await store.commit_chunk("bench", [], [(e, ["bench"]) for e in events[i:i + 5_000]])
        sink = SyslogSinkConfig.model_validate({
            "name": "bench", "type": "syslog", "host": "127.0.0.1", "port": daemon.ports["tcp"],
        }).build()
        worker = SinkWorker(sink, store)  # type: ignore[arg-type]
        start = time.perf_counter()
        left = await worker.drain()
        elapsed = time.perf_counter() - start
        if left:
            raise RuntimeError(f"{left} deliveries left in the outbox")
        return len(events) / elapsed
    finally:
        await store.close()


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    binary = find_rsyslogd()
    if binary is None:
        print("syslog: rsyslogd not installed (apt-get install rsyslog rsyslog-gnutls)")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-syslog-") as tmp:
        folder = Path(tmp)
        ca = trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1")
        certs = {"ca": folder / "ca.pem", "cert": folder / "server.pem",
                 "key": folder / "server.key"}
        ca.cert_pem.write_to_path(str(certs["ca"]))
        server.cert_chain_pems[0].write_to_path(str(certs["cert"]))
        server.private_key_pem.write_to_path(str(certs["key"]))
        daemon = Rsyslogd(binary, folder / "rsyslog", template="plain",
                          tls=TlsFiles(certs["ca"], certs["cert"], certs["key"]))
        daemon.start()
        events = make_events(EVENTS)
        gc.collect()
        gc.freeze()
        try:
            results = {(p, f): measure(daemon, p, f, events, certs)
                       for p, f in (("tcp", "cef"), ("tls", "cef"), ("tcp", "leef"),
                                    ("tcp", "json"))}
            try:
                outbox: float | str = asyncio.run(
                    through_outbox(daemon, events[:OUTBOX_EVENTS], folder))
                wait_delivered(daemon, "tcp", OUTBOX_EVENTS)
            except Exception as exc:  # the core is not ours: report, do not fail the bench
                outbox = f"skipped ({type(exc).__name__}: {exc})"
        finally:
            daemon.stop()
            gc.unfreeze()
    print(f"syslog: {EVENTS:,} events in batches of {BATCH:,} to rsyslogd on 127.0.0.1 "
          f"(written to a file, every message checked), best of {ROUNDS}")
    for (protocol, fmt), (sink_eps, raw_eps, size) in results.items():
        print(f"  {protocol.upper():3} {fmt:4} sink {sink_eps:>9,.0f} ev/s   raw socket "
              f"{raw_eps:>9,.0f} ev/s   ratio {sink_eps / raw_eps:4.0%}   ({size} B/event)")
    tcp_eps, tcp_raw, _ = results[("tcp", "cef")]
    outbox_eps = outbox if isinstance(outbox, float) else 0.0
    print(f"  full path, SQLite outbox -> worker -> sink -> rsyslogd over TCP, CEF: "
          f"{outbox_eps:,.0f} ev/s ({OUTBOX_EVENTS:,} events)"
          + ("" if isinstance(outbox, float) else f": {outbox}"))
    # The issue's target is "from the outbox": both readings are checked, the sink alone and
    # the whole path, so a fast encoder cannot hide a slow outbox.
    ok_eps = tcp_eps >= TARGET_EPS and outbox_eps >= TARGET_EPS
    ok_ratio = tcp_eps / tcp_raw >= TARGET_RATIO
    print(f"  target >= {TARGET_EPS:,} ev/s over TCP: sink {'met' if tcp_eps >= TARGET_EPS else 'MISSED'}, "
          f"from the outbox {'met' if outbox_eps >= TARGET_EPS else 'MISSED'};  "
          f"sink >= {TARGET_RATIO:.0%} of raw: {'met' if ok_ratio else 'MISSED'}")
    print(f"  {'PASS' if ok_eps and ok_ratio else 'MISS'}")
    return 0 if ok_eps and ok_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
