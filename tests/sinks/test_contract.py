"""Every built-in sink runs the shared contract suites against its real receiver: the webhook
sink against an aiohttp server, syslog against a TCP listener that parses RFC 5424 frames, the
file sink against a file on disk, stdout against a stream, syslog over RELP against a real
rsyslogd `imrelp`. A new sink adds a harness here and the suites that apply (see
CONTRIBUTING.md)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from bridge.sinks.base import Sink, SinkConfig
from bridge.sinks.file import FileSink, FileSinkConfig, StdoutSink, StdoutSinkConfig
from bridge.sinks.jira import JiraSinkConfig
from bridge.sinks.pagerduty import PagerDutySinkConfig
from bridge.sinks.slack import SlackSinkConfig
from bridge.sinks.syslog import SyslogSinkConfig
from bridge.sinks.teams import TeamsSinkConfig
from bridge.sinks.webhook import WebhookSinkConfig
from tests.support.fake_jira import FakeJira
from tests.support.receiver import Receiver
from tests.support.rsyslogd import Rsyslogd
from tests.support.service_receivers import (
    PagerDutyReceiver,
    ServiceReceiver,
    SlackReceiver,
    TeamsReceiver,
)
from tests.support.sink_contract import (
    PerEventContract,
    PerEventHarness,
    SecretContract,
    SinkContract,
    SinkHarness,
    UnreachableContract,
    UnreachableHarness,
)
from tests.syslog.conftest import relp_rsyslogd_binary
from tests.syslog.parsers import parse_5424
from tests.syslog.receivers import StreamReceiver

pytestmark = pytest.mark.timeout(60)


# -- HTTP sinks: the webhook and its presets -------------------------------------------------------


class HttpHarness(UnreachableHarness, PerEventHarness):
    """An HTTP sink against a receiver in this process: unreachable is the receiver stopped,
    back is the same receiver listening again on the same port. Subclasses name the receiver,
    the sink's config and how the receiver is told to fail or refuse an event."""

    receiver: Receiver | ServiceReceiver
    secret: str  # the credential the sink sends, which a refusal may echo
    port = 0

    async def start(self) -> None:
        await self.receiver.start(self.port)
        self.port = int(self.receiver.url.rsplit(":", 1)[1].split("/")[0])

    async def go_away(self) -> None:
        await self.receiver.stop()

    async def come_back(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.receiver.stop()


@contextlib.asynccontextmanager
async def running(harness: HttpHarness) -> AsyncIterator[HttpHarness]:
    """A `harness` fixture's body: the receiver listens for the test, and is stopped after."""
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()


class WebhookHarness(HttpHarness):
    secret = "contract-bearer-0123456789abcdef"

    def __init__(self) -> None:
        self.receiver = self.webhook = Receiver()

    def sink(self, **overrides: Any) -> Sink[SinkConfig]:
        config = WebhookSinkConfig.model_validate({
            "type": "webhook", "name": "hook", "url": f"http://127.0.0.1:{self.port}/hook",
            "bearer_token": self.secret, "backoff_initial": 0.001, "backoff_max": 0.01,
            "timeout": 5, **overrides})
        return cast("Sink[SinkConfig]", config.build())

    def arrived(self) -> list[str]:
        return [r.id for r in self.webhook.received]

    def fail(self, event_id: str) -> None:
        self.webhook.answers[event_id] = 503

    def reject(self, event_id: str, *, echo_secret: bool = False) -> None:
        self.webhook.answers[event_id] = 422
        self.webhook.echo_auth = echo_secret


class TestWebhookSink(SinkContract, UnreachableContract, PerEventContract, SecretContract):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[HttpHarness]:
        async with running(WebhookHarness()) as h:
            yield h


# -- Slack, Teams, PagerDuty: each against a receiver that follows the service's documents ---------


class ServiceHarness(HttpHarness):
    """A preset against its service's receiver; `secret` is the preset's credential (the
    webhook URL's token, the routing key)."""

    def __init__(self, receiver: ServiceReceiver, preset: str) -> None:
        self.receiver = self.service = receiver
        self.preset = preset
        self.secret = (PagerDutyReceiver.routing_key if preset == "pagerduty"
                       else receiver.path)

    def sink(self, **overrides: Any) -> Sink[SinkConfig]:
        url = f"http://127.0.0.1:{self.port}{self.service.path}"
        common = {"name": self.preset, "type": self.preset, "backoff_initial": 0.001,
                  "backoff_max": 0.01, "timeout": 5, "max_events_per_minute": None}
        model: type[SinkConfig]
        if self.preset == "pagerduty":
            model, settings = PagerDutySinkConfig, {"url": url,
                                                    "routing_key": PagerDutyReceiver.routing_key}
        else:
            model = SlackSinkConfig if self.preset == "slack" else TeamsSinkConfig
            settings = {"webhook_url": url}
        config = model.model_validate({**common, **settings, **overrides})
        return cast("Sink[SinkConfig]", config.build())

    def arrived(self) -> list[str]:
        return self.service.arrived()

    def fail(self, event_id: str) -> None:
        self.service.per_event[event_id] = 503

    def reject(self, event_id: str, *, echo_secret: bool = False) -> None:
        self.service.per_event[event_id] = 400
        self.service.echo_secret = echo_secret

    async def close(self) -> None:
        await super().close()
        assert self.service.violations == []  # every payload had the documented shape


class ServiceContracts(SinkContract, UnreachableContract, PerEventContract, SecretContract):
    receiver_type: type[ServiceReceiver]
    preset: str

    @pytest.fixture
    async def harness(self) -> AsyncIterator[HttpHarness]:
        async with running(ServiceHarness(self.receiver_type(), self.preset)) as h:
            yield h


class TestSlackSink(ServiceContracts):
    receiver_type, preset = SlackReceiver, "slack"


class TestTeamsSink(ServiceContracts):
    receiver_type, preset = TeamsReceiver, "teams"


class TestPagerDutySink(ServiceContracts):
    receiver_type, preset = PagerDutyReceiver, "pagerduty"


# -- Jira: against the strict fake Jira ------------------------------------------------------------


class JiraHarness(UnreachableHarness, PerEventHarness):
    """The Jira sink against the fake Jira (tests/support/fake_jira.py). An event arrived when
    a create or comment carrying its id was accepted (every ticket text names its event)."""

    secret = "contract-jira-token-0123456789"

    def __init__(self) -> None:
        self.fake = FakeJira(mode="cloud", token=self.secret)
        self.port = 0

    async def start(self) -> None:
        await self.fake.start(self.port)
        self.port = int(self.fake.url.rsplit(":", 1)[1])

    def sink(self, **overrides: Any) -> Sink[SinkConfig]:
        config = JiraSinkConfig.model_validate({
            "type": "jira", "name": "jira", "url": f"http://127.0.0.1:{self.port}",
            "email": self.fake.email, "api_token": self.secret, "project": self.fake.project,
            "backoff_initial": 0.001, "backoff_max": 0.01, "timeout": 5, **overrides})
        return cast("Sink[SinkConfig]", config.build())

    def arrived(self) -> list[str]:
        return [m.group(1) for _, text in self.fake.journal
                for m in re.finditer(r"event ([0-9a-f]{32})", text)]

    def fail(self, event_id: str) -> None:
        self.fake.answers[event_id] = 503

    def reject(self, event_id: str, *, echo_secret: bool = False) -> None:
        self.fake.answers[event_id] = 400
        self.fake.echo_auth = echo_secret

    async def go_away(self) -> None:
        await self.fake.stop()

    async def come_back(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.fake.stop()
        assert self.fake.violations == []


class TestJiraSink(SinkContract, UnreachableContract, PerEventContract, SecretContract):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[JiraHarness]:
        h = JiraHarness()
        await h.start()
        try:
            yield h
        finally:
            await h.close()


# -- syslog over TCP ------------------------------------------------------------------------------


class SyslogHarness(UnreachableHarness):
    """RFC 5424 over TCP with octet counting and JSON payloads, to a listener that keeps every
    byte; `arrived` parses the frames back into event ids."""

    def __init__(self) -> None:
        self.receiver: StreamReceiver | None = None
        self.earlier: list[bytes] = []  # what receivers that went away had received
        self.port = 0

    async def start(self) -> None:
        self.receiver = StreamReceiver(port=self.port)
        await self.receiver.__aenter__()
        self.port = self.receiver.port

    def sink(self, **overrides: Any) -> Sink[SinkConfig]:
        config = SyslogSinkConfig.model_validate({
            "type": "syslog", "name": "siem", "host": "127.0.0.1", "port": self.port,
            "protocol": "tcp", "format": "json", "connect_grace": 0.0,
            "backoff_initial": 0.001, "backoff_max": 0.01, **overrides})
        return cast("Sink[SinkConfig]", config.build())

    def arrived(self) -> list[str]:
        streams = self.earlier + ([bytes(c) for c in self.receiver.connections]
                                  if self.receiver else [])
        ids: list[str] = []
        for data in streams:
            while data:
                length, _, rest = data.partition(b" ")
                frame, data = rest[:int(length)], rest[int(length):]
                ids.append(json.loads(parse_5424(frame.decode()).msg)["id"])
        return ids

    async def go_away(self) -> None:
        assert self.receiver is not None
        await self.receiver.__aexit__(None, None, None)
        self.earlier += [bytes(c) for c in self.receiver.connections]
        self.receiver = None

    async def come_back(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self.receiver is not None:
            await self.go_away()


class TestSyslogSink(SinkContract, UnreachableContract):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[SyslogHarness]:
        h = SyslogHarness()
        await h.start()
        try:
            yield h
        finally:
            await h.close()

    async def test_through_the_outbox_worker_everything_arrives_once(
            self, harness: SinkHarness, store: Any) -> None:
        await super().test_through_the_outbox_worker_everything_arrives_once(harness, store)
        # Stream sinks write whole batches: nothing arrived twice either.
        arrived = harness.arrived()
        assert len(arrived) == len(set(arrived))


# -- syslog over RELP -----------------------------------------------------------------------------


class RelpHarness(UnreachableHarness):
    """RFC 5424 with JSON payloads over RELP to a real rsyslogd `imrelp`, which answers each
    message once it has written it; `arrived` reads its output back. Away is stopped (nothing
    listens on the port), back is started again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.daemon = Rsyslogd(relp_rsyslogd_binary(), workdir, relp=True)

    def sink(self, **overrides: Any) -> Sink[SinkConfig]:
        config = SyslogSinkConfig.model_validate({
            "type": "syslog", "name": "siem", "host": "127.0.0.1",
            "port": self.daemon.ports["relp"], "protocol": "relp", "format": "json",
            "connect_timeout": 2, "write_timeout": 5, "backoff_initial": 0.001,
            "backoff_max": 0.01, **overrides})
        return cast("Sink[SinkConfig]", config.build())

    def arrived(self) -> list[str]:
        return [json.loads(parse_5424(r["raw"]).msg)["id"] for r in self.daemon.records("relp")]

    async def go_away(self) -> None:
        await asyncio.to_thread(self.daemon.stop)

    async def come_back(self) -> None:
        await asyncio.to_thread(self.daemon.start)

    async def close(self) -> None:
        await self.go_away()


class TestRelpSink(SinkContract, UnreachableContract):
    @pytest.fixture
    async def harness(self, tmp_path: Path) -> AsyncIterator[RelpHarness]:
        h = RelpHarness(tmp_path / "rsyslog")
        await h.come_back()
        try:
            yield h
        finally:
            await h.close()

    async def test_through_the_outbox_worker_everything_arrives_once(
            self, harness: SinkHarness, store: Any) -> None:
        await super().test_through_the_outbox_worker_everything_arrives_once(harness, store)
        # Each message was acknowledged by the receiver: nothing was sent twice.
        arrived = harness.arrived()
        assert len(arrived) == len(set(arrived))


# -- file and stdout ------------------------------------------------------------------------------


class FileHarness(UnreachableHarness):
    """JSON lines in a file; 'unreachable' is a directory that cannot be created (its parent
    is a regular file), which no permission bit can get round, not even root's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "out" / "events.jsonl"

    def sink(self, **overrides: Any) -> Sink[SinkConfig]:
        config = FileSinkConfig.model_validate({"type": "file", "name": "archive",
                                                "path": self.path, **overrides})
        return cast("Sink[SinkConfig]", FileSink(config))

    def arrived(self) -> list[str]:
        if not self.path.exists():
            return []
        return [json.loads(line)["id"] for line in self.path.read_text().splitlines()]

    async def go_away(self) -> None:
        kept = self.path.read_bytes() if self.path.exists() else b""
        shutil.rmtree(self.path.parent, ignore_errors=True)
        self.path.parent.write_bytes(kept)  # a file where the directory should be

    async def come_back(self) -> None:
        kept = self.path.parent.read_bytes()
        self.path.parent.unlink()
        self.path.parent.mkdir()
        self.path.write_bytes(kept)


class TestFileSink(SinkContract, UnreachableContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> FileHarness:
        return FileHarness(tmp_path)


class StdoutHarness(SinkHarness):
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def sink(self, **overrides: Any) -> Sink[SinkConfig]:
        config = StdoutSinkConfig.model_validate({"type": "stdout", "name": "console",
                                                  "format": "json", **overrides})
        return cast("Sink[SinkConfig]", StdoutSink(config, stream=self.stream))

    def arrived(self) -> list[str]:
        return [json.loads(line)["id"] for line in self.stream.getvalue().splitlines()]


class TestStdoutSink(SinkContract):
    @pytest.fixture
    def harness(self) -> StdoutHarness:
        return StdoutHarness()
