"""Syslog sink benchmark (issue: SIEM sinks).

Events per second into a real rsyslogd on 127.0.0.1 over TCP, TLS and RELP (imrelp, plain
and over TLS; rsyslogd writes every message to a file, and the run checks that every one
arrived), TCP and TLS printed next to a raw-socket baseline that writes the same pre-formatted
bytes in the same run (RELP has none: its receiver answers every message, which no raw write
waits for). Two paths are measured: the sink alone (`SyslogSink.send`, in batches the way the
outbox worker hands them over) and the whole delivery path from a SQLite outbox through a sink
worker. imrelp here writes each message to its file before answering it (a ruleset without a
queue, tests/support/rsyslogd.py): the acknowledgement RELP is used for, not a faster one.

Targets on a 2-core machine: >= 50,000 events/s from the outbox over TCP, the sink at >= 50% of
the raw baseline, and >= 20,000 events/s from the outbox over RELP.

Run: `python -m bench.bench_syslog` or `python bench/bench_syslog.py`; needs rsyslogd,
rsyslog-gnutls and rsyslog-relp. The events are built up front and then frozen out of the garbage collector's
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
TARGET_RELP_EPS = 20_000


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


def sink_settings(daemon: Rsyslogd, protocol: str, fmt: str, certs: dict[str, Path]
                  ) -> tuple[SyslogSinkConfig, ssl.SSLContext | None]:
    """The sink for an rsyslogd input: tcp, tls, relp or relps (RELP over TLS, with our
    client certificate, which imrelp with certificates asks for)."""
    settings: dict[str, object] = {
        "name": "bench", "type": "syslog", "host": "127.0.0.1",
        "protocol": "relp" if protocol.startswith("relp") else protocol,
        "port": daemon.ports[protocol], "format": fmt,
    }
    ctx = None
    if protocol in ("tls", "relps"):
        settings.update(ca_bundle=str(certs["ca"]), server_name="localhost")
        ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    if protocol == "relps":
        settings.update(tls=True, client_cert=str(certs["client_cert"]),
                        client_key=str(certs["client_key"]))
    return SyslogSinkConfig.model_validate(settings), ctx


def measure_relp(daemon: Rsyslogd, protocol: str, events: list[Event],
                 certs: dict[str, Path]) -> float:
    """Best-of-rounds events/s for the sink alone over RELP: every batch answered."""
    config, _ = sink_settings(daemon, protocol, "cef", certs)
    work = batches(events)
    wait_delivered(daemon, protocol, 0)
    best = 0.0
    for _ in range(ROUNDS):
        best = max(best, len(events) / asyncio.run(through_sink(config.build(), work)))
        wait_delivered(daemon, protocol, len(events))
    return best


def measure(daemon: Rsyslogd, protocol: str, fmt: str, events: list[Event],
            certs: dict[str, Path]) -> tuple[float, float, int]:
    """Best-of-rounds events/s for the sink and for the raw socket, and bytes per event."""
    config, ctx = sink_settings(daemon, protocol, fmt, certs)
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


async def through_outbox(config: SyslogSinkConfig, events: list[Event], folder: Path) -> float:
    """The whole delivery path: SQLite outbox -> sink worker -> sink -> rsyslogd."""
    from bridge.outbox import SinkWorker
    from bridge.store.sqlite import SQLiteStore

    store = SQLiteStore(folder / "outbox.db")
    await store.open()
    try:
        for i in range(0, len(events), 5_000):
            await store.commit_chunk("bench", [], [(e, ["bench"]) for e in events[i:i + 5_000]])
        sink = config.build()
        worker = SinkWorker(sink, store)  # type: ignore[arg-type]
        # Connected before the clock starts, as in `through_sink`: connecting includes a grace
        # period (0.2 s) in which a receiver may hang up on us, paid once per connection.
        await sink.open()
        start = time.perf_counter()
        left = await worker.drain()
        elapsed = time.perf_counter() - start
        if left:
            raise RuntimeError(f"{left} deliveries left in the outbox")
        return len(events) / elapsed
    finally:
        await store.close()


def measure_outbox(daemon: Rsyslogd, protocol: str, events: list[Event], certs: dict[str, Path],
                   folder: Path) -> float:
    """Best-of-rounds events/s from the outbox, every message checked at rsyslogd."""
    config, _ = sink_settings(daemon, protocol, "cef", certs)
    best = 0.0
    for round_ in range(ROUNDS):
        best = max(best, asyncio.run(through_outbox(config, events, folder / f"{protocol}-{round_}")))
        wait_delivered(daemon, protocol, len(events))
    return best


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    binary = find_rsyslogd()
    if binary is None:
        print("syslog: rsyslogd not installed "
              "(apt-get install rsyslog rsyslog-gnutls rsyslog-relp)")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-syslog-") as tmp:
        folder = Path(tmp)
        ca = trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1")
        client = ca.issue_cert("bridge-bench.test")
        certs = {"ca": folder / "ca.pem", "cert": folder / "server.pem",
                 "key": folder / "server.key", "client_cert": folder / "client.pem",
                 "client_key": folder / "client.key"}
        ca.cert_pem.write_to_path(str(certs["ca"]))
        server.cert_chain_pems[0].write_to_path(str(certs["cert"]))
        server.private_key_pem.write_to_path(str(certs["key"]))
        client.cert_chain_pems[0].write_to_path(str(certs["client_cert"]))
        client.private_key_pem.write_to_path(str(certs["client_key"]))
        daemon = Rsyslogd(binary, folder / "rsyslog", template="plain", relp=True,
                          tls=TlsFiles(certs["ca"], certs["cert"], certs["key"]))
        daemon.start()
        events = make_events(EVENTS)
        gc.collect()
        gc.freeze()
        try:
            results = {(p, f): measure(daemon, p, f, events, certs)
                       for p, f in (("tcp", "cef"), ("tls", "cef"), ("tcp", "leef"),
                                    ("tcp", "json"))}
            relp = {p: measure_relp(daemon, p, events, certs) for p in ("relp", "relps")}
            outbox = {p: measure_outbox(daemon, p, events[:OUTBOX_EVENTS], certs, folder)
                      for p in ("tcp", "tls", "relp", "relps")}
        finally:
            daemon.stop()
            gc.unfreeze()
    print(f"syslog: {EVENTS:,} events in batches of {BATCH:,} to rsyslogd on 127.0.0.1 "
          f"(written to a file, every message checked), best of {ROUNDS}")
    for (protocol, fmt), (sink_eps, raw_eps, size) in results.items():
        print(f"  {protocol.upper():5} {fmt:4} sink {sink_eps:>9,.0f} ev/s   raw socket "
              f"{raw_eps:>9,.0f} ev/s   ratio {sink_eps / raw_eps:4.0%}   ({size} B/event)")
    for protocol, eps in relp.items():
        print(f"  {protocol.upper():5} cef  sink {eps:>9,.0f} ev/s   every message answered by "
              "imrelp after it was written")
    print(f"  from the outbox (SQLite outbox -> sink worker -> sink -> rsyslogd), CEF, "
          f"{OUTBOX_EVENTS:,} events, best of {ROUNDS}:")
    for protocol, eps in outbox.items():
        if protocol.startswith("relp"):
            print(f"  {protocol.upper():5} cef  outbox {eps:>7,.0f} ev/s")
            continue
        raw_eps = results[(protocol, "cef")][1]
        print(f"  {protocol.upper():5} cef  outbox {eps:>7,.0f} ev/s   raw socket "
              f"{raw_eps:>9,.0f} ev/s   ratio {eps / raw_eps:4.0%}")
    tcp_eps, tcp_raw, _ = results[("tcp", "cef")]
    # Throughput is the outbox path's; the raw-socket ratio is the sink's (formatting, framing
    # and writing against writing ready-made bytes): the outbox adds SQLite and decoding, which
    # no socket baseline has, and is shown above for reference.
    ok_eps = outbox["tcp"] >= TARGET_EPS
    ok_ratio = tcp_eps / tcp_raw >= TARGET_RATIO
    ok_relp = outbox["relp"] >= TARGET_RELP_EPS
    print(f"  target >= {TARGET_EPS:,} ev/s from the outbox over TCP: "
          f"{'met' if ok_eps else 'MISSED'} ({outbox['tcp']:,.0f});  sink >= {TARGET_RATIO:.0%} "
          f"of raw over TCP: {'met' if ok_ratio else 'MISSED'} ({tcp_eps / tcp_raw:.0%})")
    print(f"  target >= {TARGET_RELP_EPS:,} ev/s from the outbox over RELP: "
          f"{'met' if ok_relp else 'MISSED'} ({outbox['relp']:,.0f})")
    passed = ok_eps and ok_ratio and ok_relp
    print(f"  {'PASS' if passed else 'MISS'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
