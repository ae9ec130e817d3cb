"""A real rsyslogd (UDP, TCP, TLS and mTLS inputs) for the whole syslog suite, certificates made
on the spot with trustme, and helpers to build sinks against it and read back what it got."""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from bridge.sinks.syslog import SyslogSinkConfig
from tests.conftest import IN_CI, require_binary
from tests.support.rsyslogd import Rsyslogd, TlsFiles
from tests.support.waiting import wait_until

HOSTNAME = "bridge-test"
PROCID = "4242"


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # trusts nothing we run


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    ca, rogue = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("bridge-client.test")
    paths = Certs(*(folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem",
                                          "client.key", "rogue.pem")))
    ca.cert_pem.write_to_path(str(paths.ca))
    server.cert_chain_pems[0].write_to_path(str(paths.server_cert))
    server.private_key_pem.write_to_path(str(paths.server_key))
    client.cert_chain_pems[0].write_to_path(str(paths.client_cert))
    client.private_key_pem.write_to_path(str(paths.client_key))
    rogue.cert_pem.write_to_path(str(paths.rogue_ca))
    return paths


def rsyslogd_binary() -> str:
    """The real receiver; missing fails under CI=true and skips elsewhere (tests/conftest)."""
    binary = require_binary("rsyslogd", "/usr/sbin/rsyslogd")
    _require_module("lmnsd_gtls", "rsyslog-gnutls")
    return binary


def _require_module(name: str, package: str) -> None:
    patterns = (f"/usr/lib/*/rsyslog/{name}.so", f"/usr/lib*/rsyslog/{name}.so")
    if not any(glob.glob(pattern) for pattern in patterns):
        message = f"{package} is not installed (the README test command installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def relp_rsyslogd_binary() -> str:
    """rsyslogd with its RELP input (imrelp, package rsyslog-relp); missing fails under CI."""
    binary = rsyslogd_binary()
    _require_module("imrelp", "rsyslog-relp")
    return binary


def start_rsyslogd(folder: Path, certs: Certs, *, relp: bool = False) -> Rsyslogd:
    binary = relp_rsyslogd_binary() if relp else rsyslogd_binary()
    daemon = Rsyslogd(binary, folder, tls=TlsFiles(certs.ca, certs.server_cert, certs.server_key),
                      relp=relp)
    daemon.start()
    return daemon


@pytest.fixture(scope="session")
def rsyslog(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslogd]:
    daemon = start_rsyslogd(tmp_path_factory.mktemp("rsyslog"), certs)
    yield daemon
    daemon.stop()


def make_config(daemon: Rsyslogd, certs: Certs, protocol: str = "tcp", *,
                input_name: str | None = None, **overrides: Any) -> SyslogSinkConfig:
    settings: dict[str, Any] = {
        "name": "siem", "type": "syslog", "host": "127.0.0.1", "protocol": protocol,
        "port": daemon.ports[input_name or protocol], "hostname": HOSTNAME, "procid": PROCID,
        "connect_grace": 0.0,
    }
    if protocol == "tls" or overrides.get("tls"):
        settings.update(ca_bundle=str(certs.ca), server_name="localhost")
    settings.update(overrides)
    return SyslogSinkConfig.model_validate(settings)


_EVENT_ID = re.compile(rb"[0-9a-f]{32}")


async def wait_records(daemon: Rsyslogd, input_name: str, ids: Iterable[str],
                       timeout: float = 15.0, each: int = 1) -> dict[str, list[dict[str, Any]]]:
    """Poll the input's output until every event id shows up (in `each` messages at least);
    return the records per id."""
    wanted = set(ids)
    path = daemon.output(input_name)
    missing: list[str] = sorted(wanted)

    def arrived() -> dict[str, list[dict[str, Any]]] | None:
        nonlocal missing
        found: dict[str, list[dict[str, Any]]] = {i: [] for i in wanted}
        data = path.read_bytes() if path.exists() else b""
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            hits = {t.decode() for t in _EVENT_ID.findall(line)} & wanted
            if hits:
                record = json.loads(line)
                for event_id in hits:
                    found[event_id].append(record)
        missing = sorted(i for i, records in found.items() if len(records) < each)
        return None if missing else found

    try:
        return await wait_until(arrived, timeout, f"events reaching rsyslog ({input_name})",
                                every=0.02)
    except TimeoutError:
        raise AssertionError(f"{len(missing)} of {len(wanted)} events never reached rsyslog "
                             f"({input_name}): {missing[:5]}") from None
