"""No configured secret ever reaches a log line, an admin answer or CLI output, whatever goes
wrong. Every vendor error here quotes the API key back (see `echo_key`) and every failing
webhook receiver quotes its bearer token, so each path has a secret in hand to leak; the
tests also check that the `***` is there, i.e. that redaction happened rather than luck."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.sim.faults import Fault
from tests.daemon._http import Samples, get, scrape, value
from tests.daemon.conftest import StartDaemon, Vendor, daemon_config, random_secret
from tests.support.daemon import DaemonProcess, LogLine, run_cli
from tests.support.receiver import Receiver


@dataclass
class Case:
    """One error path, and everything it lets an operator (or an attacker) read."""

    tmp_path: Path
    vendor: Vendor
    receiver: Receiver
    start_daemon: StartDaemon
    key: str = field(default_factory=lambda: "")
    hook_token: str = field(default_factory=lambda: random_secret("whk", 40))  # no known shape
    admin_token: str = field(default_factory=lambda: random_secret("adm_", 32))
    captured: list[str] = field(default_factory=list)
    metrics: Samples = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = self.vendor.key
        self.receiver.echo_auth = True

    @property
    def env(self) -> dict[str, str]:
        return {"SO_KEY": self.key, "HOOK_TOKEN": self.hook_token,
                "ADMIN_TOKEN": self.admin_token}

    def config(self, **source: Any) -> dict[str, Any]:
        """Secrets come from the environment, as in production; the file only names them."""
        config = daemon_config(self.tmp_path, self.vendor, self.receiver.url,
                               **{"http": {"backoff_initial": 0.01, "backoff_max": 0.02,
                                           "max_retries": 1, "timeout": 2}, **source})
        config["sources"][0]["api_key"] = "${SO_KEY}"
        config["sinks"][0].update(bearer_token="${HOOK_TOKEN}", max_attempts=2)
        config["admin"]["token"] = "${ADMIN_TOKEN}"
        return config

    async def daemon_until(self, event: str, where: Callable[[LogLine], bool],
                           config: dict[str, Any] | None = None) -> LogLine:
        """Run the daemon until it logs `event`; capture its log and admin answers."""
        daemon = await self.start_daemon(config or self.config(), env=self.env)
        line = await daemon.wait_log(event, where=where)
        await self.capture_admin(daemon)
        assert await daemon.stop() == 0
        self.captured.append(daemon.logs())
        return line

    async def capture_admin(self, daemon: DaemonProcess) -> None:
        base = await daemon.admin_url()
        for path in ("/readyz", "/metrics", "/healthz"):
            status, body = await get(f"{base}{path}", self.admin_token)
            assert status in (200, 503)
            self.captured.append(json.dumps(body) if not isinstance(body, str) else body)
        self.metrics = await scrape(base, self.admin_token)

    async def cli(self, *commands: tuple[str, ...]) -> list[int]:
        """Run CLI commands side by side; capture their output; return their exit codes."""
        results = await asyncio.gather(*(run_cli(*args, env=self.env) for args in commands))
        for _, out, err in results:
            self.captured += [out, err]
        return [code for code, _, _ in results]

    def leaks(self) -> list[str]:
        """Which secrets (whole, or any 12-character piece of one) appear in what was captured."""
        text = "\n".join(self.captured)
        found = []
        for name, secret in (("api key", self.key), ("webhook token", self.hook_token),
                             ("admin token", self.admin_token)):
            body = secret.split("_")[-1]
            pieces = [body[i:i + 12] for i in range(0, len(body) - 11, 4)]
            if secret in text or any(p in text for p in pieces):
                found.append(name)
        return found


def redacted(line: LogLine, key: str) -> bool:
    return "***" in str(line.get(key, ""))


async def revoked_key(case: Case) -> None:
    case.vendor.world.revoke(case.key)
    line = await case.daemon_until("sweep_failed", lambda r: True)
    assert "401" in line["error"] and redacted(line, "error"), line


def vendor_fault(**fault: Any) -> Callable[[Case], Awaitable[None]]:
    """Every vendor request answered with `fault`: the sweep ends incomplete."""

    async def scenario(case: Case) -> None:
        case.vendor.world.faults.add(Fault(times=-1, **fault))
        line = await case.daemon_until(
            "sweep_done", lambda r: r["outcome"] == "incomplete",
            case.config(http={"backoff_initial": 0.01, "backoff_max": 0.02, "max_retries": 1,
                              "timeout": 0.3}))
        assert line["notes"], line
        if fault.get("status") == 429:
            assert value(case.metrics, "bridge_api_429_total", vendor="scanorbit") >= 2
        if fault["kind"] == "status" and fault["status"] != 429:  # a body quoting the key
            assert str(fault["status"]) in line["notes"][0] and "***" in line["notes"][0], line

    return scenario


def failing_receiver(status: int) -> Callable[[Case], Awaitable[None]]:
    """The receiver answers `status` and quotes the token back: events end as dead letters,
    which the log, /readyz and `bridge dlq list` all describe."""

    async def scenario(case: Case) -> None:
        case.vendor.world.add_finding()
        case.receiver.mode = status
        line = await case.daemon_until("dead_lettered", lambda r: True)
        assert str(status) in line["error"] and redacted(line, "error"), line
        assert line["event_ids"] == [case.receiver.attempts[0].id] and line["sink"] == "hook"
        assert value(case.metrics, "bridge_dead_letters_total", sink="hook") == 1
        assert value(case.metrics, "bridge_deliveries_total", sink="hook", outcome="dead") == 1
        assert case.receiver.attempts[0].authorization == f"Bearer {case.hook_token}"
        config = str(case.tmp_path / "bridge.yaml")
        assert await case.cli(("dlq", "list", "--config", config),
                              ("dlq", "list", "--json", "--config", config)) == [0, 0]
        assert str(status) in case.captured[-2] and "***" in case.captured[-2]

    return scenario


async def config_error_at_startup(case: Case) -> None:
    """A value in the wrong place is quoted by the error (`severity 'sk_live_…' is not one
    of …`); so is an unknown sink name that is really the token."""
    severity, sink = case.config(), case.config()
    severity["routes"]["routes"] = [{"match": {"severity": "${SO_KEY}"}}]
    sink["routes"]["routes"] = [{"sinks": ["${HOOK_TOKEN}"]}]
    (case.tmp_path / "severity.yaml").write_text(json.dumps(severity))
    (case.tmp_path / "sink.yaml").write_text(json.dumps(sink))
    assert await case.cli(("run", "--config", str(case.tmp_path / "severity.yaml")),
                          ("check-config", str(case.tmp_path / "severity.yaml")),
                          ("run", "--config", str(case.tmp_path / "sink.yaml"))) == [2, 2, 2]
    errors = case.captured[1::2]
    assert all("routes.routes[0].match.severity: severity '***'" in e for e in errors[:2]), errors
    assert "routes.routes[0].sinks[0]: unknown sink '***'" in errors[2], errors


async def config_error_on_reload(case: Case) -> None:
    daemon = await case.start_daemon(case.config(), env=case.env)
    await daemon.wait_log("daemon_started")
    bad = case.config()
    bad["routes"]["routes"] = [{"sinks": ["${HOOK_TOKEN}"]}]
    daemon.write_config(bad)
    daemon.signal(signal.SIGHUP)
    line = await daemon.wait_log("reload_rejected")
    assert "unknown sink '***'" in line["problems"][0], line
    await case.capture_admin(daemon)
    assert "***" in case.captured[-3]  # /readyz shows the rejected reload, redacted
    assert await daemon.stop() == 0
    case.captured.append(daemon.logs())


async def state_store_error(case: Case) -> None:
    state = case.tmp_path / "state" / "bridge.db"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"not a database, but it mentions nothing secret" * 100)
    path = case.tmp_path / "bridge.yaml"
    path.write_text(json.dumps(case.config()))
    config = str(path)
    assert await case.cli(("run", "--config", config), ("dlq", "list", "--config", config),
                          ("state", "check", "--config", config)) == [1, 1, 1]
    assert all("not a usable SQLite database" in e for e in case.captured[1::2]), case.captured


SCENARIOS: dict[str, Callable[[Case], Awaitable[None]]] = {
    "revoked key (401)": revoked_key,
    "429 storm": vendor_fault(kind="status", status=429, code="RATE_LIMIT_EXCEEDED",
                              retry_after="0"),
    "500s": vendor_fault(kind="status", status=500),
    "timeouts": vendor_fault(kind="timeout", delay=1.0),
    "invalid JSON": vendor_fault(kind="invalid_json"),
    "webhook 500 until dead-lettered": failing_receiver(500),
    "webhook 400 rejected": failing_receiver(400),
    "config error at startup": config_error_at_startup,
    "config error on SIGHUP": config_error_on_reload,
    "state store error": state_store_error,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_no_secret_in_any_output(
    scenario: str, tmp_path: Path, vendor: Vendor, receiver: Receiver,
    start_daemon: StartDaemon
) -> None:
    case = Case(tmp_path, vendor, receiver, start_daemon)
    await SCENARIOS[scenario](case)
    assert case.captured and all(isinstance(c, str) for c in case.captured)
    assert case.leaks() == [], "\n".join(case.captured)
