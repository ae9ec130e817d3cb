"""`bridge sinks test NAME`: one clearly marked synthetic event through each kind of real sink
(file, stdout, webhook, Slack, Teams, PagerDuty against receivers that keep their services'
contracts, syslog into a real rsyslogd), the receiver's answer printed, nothing written to the
state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_binary
from tests.support.daemon import run_cli
from tests.support.receiver import Receiver
from tests.support.rsyslogd import Rsyslogd
from tests.support.service_receivers import (
    PagerDutyReceiver,
    ServiceReceiver,
    SlackReceiver,
    TeamsReceiver,
)
from tests.support.waiting import wait_until

from .conftest import write_config


def config_with(tmp_path: Path, *sinks: dict[str, Any]) -> Path:
    """A config whose state file must never be created by `sinks test`."""
    return write_config(tmp_path, {
        "state": {"path": str(tmp_path / "state" / "bridge.db")},
        "log": {"format": "json"},
        "sinks": list(sinks),
        "routes": {"sinks": [sinks[0]["name"]]},
    })


async def sinks_test(path: Path, name: str, *args: str) -> tuple[int, list[str], str]:
    code, out, err = await run_cli("sinks", "test", name, "--config", str(path), *args)
    return code, out.splitlines(), err


def no_state(tmp_path: Path) -> bool:
    return not (tmp_path / "state").exists()


async def test_file(tmp_path: Path) -> None:
    out_file = tmp_path / "events.jsonl"
    path = config_with(tmp_path, {"name": "archive", "type": "file", "path": str(out_file)})
    code, out, err = await sinks_test(path, "archive")
    assert code == 0, err
    (line,) = out_file.read_text().splitlines()
    event = json.loads(line)
    assert out[0] == (f"sink archive (file): sending one test event, id {event['id']}: "
                      f"{event['title']}")
    assert out[1] == f"delivered: appended to {out_file}"
    assert event["title"].startswith("[bridge test] ") and event["attributes"]["bridge_test"]
    assert (event["source"], event["kind"], event["type"]) == ("bridge", "test", "new")
    assert no_state(tmp_path)


async def test_stdout(tmp_path: Path) -> None:
    path = config_with(tmp_path, {"name": "screen", "type": "stdout"})
    code, out, err = await sinks_test(path, "screen", "--event",
                                      '{"severity": "critical", "title": "disk on fire"}')
    assert code == 0, err
    assert out[1].startswith("NEW       critical bridge test [bridge test] disk on fire")
    assert out[2] == "delivered: written by the stdout sink"
    assert no_state(tmp_path)


async def test_webhook_answers_and_refusals(tmp_path: Path, receiver: Receiver) -> None:
    path = config_with(tmp_path, {"name": "hook", "type": "webhook", "url": receiver.url})
    code, out, err = await sinks_test(path, "hook", "--event",
                                      '{"type": "resolved", "attributes": {"team": "cloud"}}')
    assert code == 0, err
    assert out[1] == 'delivered: HTTP 200: {"ok": true}'
    (got,) = receiver.received
    assert got.event.type.value == "resolved" and got.event.attributes == {
        "team": "cloud", "bridge_test": True}
    assert got.event.title.startswith("[bridge test]")

    receiver.mode = 400
    code, out, _ = await sinks_test(path, "hook")
    assert code == 1 and out[1].startswith("refused: receiver answered 400")
    receiver.mode, receiver.retry_after = 429, "30"
    code, out, _ = await sinks_test(path, "hook")
    assert code == 1 and out[1].startswith("throttled: receiver answered 429")
    await receiver.stop()
    code, out, _ = await sinks_test(path, "hook")
    assert code == 1 and out[1].startswith("unreachable: ")
    assert no_state(tmp_path)


@pytest.mark.parametrize(("kind", "receiver_type", "settings", "answer"), [
    ("slack", SlackReceiver, {}, "HTTP 200: ok"),
    ("teams", TeamsReceiver, {}, "HTTP 202: "),
    ("pagerduty", PagerDutyReceiver, {"routing_key": PagerDutyReceiver.routing_key},
     'HTTP 202: {"status": "success", "message": "Event processed"'),
])
async def test_chat_and_paging_services(tmp_path: Path, kind: str,
                                        receiver_type: type[ServiceReceiver],
                                        settings: dict[str, Any], answer: str) -> None:
    service = await receiver_type().start()
    try:
        url_key = "url" if kind == "pagerduty" else "webhook_url"
        path = config_with(tmp_path, {"name": kind, "type": kind, url_key: service.url,
                                      **settings})
        code, out, err = await sinks_test(path, kind, "--event", '{"severity": "high"}')
        assert code == 0, err
        assert out[1].startswith(f"delivered: {answer}"), out
        assert len(service.accepted) == 1 and service.violations == []
        assert "[bridge test]" in json.dumps(service.accepted[0])
    finally:
        await service.stop()
    assert no_state(tmp_path)


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslogd]:
    daemon = Rsyslogd(require_binary("rsyslogd", "/usr/sbin/rsyslogd"),
                      tmp_path_factory.mktemp("rsyslog"), relp=True)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.mark.parametrize(("protocol", "answer"), [
    ("tcp", "syslog has no answer"), ("udp", "syslog has no answer"),
    ("relp", "the receiver acknowledged it"),  # RELP's rsp 200 is an answer
])
async def test_syslog_into_rsyslogd(tmp_path: Path, rsyslog: Rsyslogd, protocol: str,
                                    answer: str) -> None:
    port = rsyslog.ports[protocol]
    path = config_with(tmp_path, {"name": "siem", "type": "syslog", "host": "127.0.0.1",
                                  "port": port, "protocol": protocol, "format": "cef"})
    code, out, err = await sinks_test(path, "siem")
    assert code == 0, err
    event_id = out[0].split(", id ")[1].split(":")[0]
    assert out[1] == f"delivered: sent to 127.0.0.1:{port} over {protocol} ({answer})"
    records = await wait_until(
        lambda: [r for r in rsyslog.records(protocol) if event_id in json.dumps(r)], 15,
        f"the test event in rsyslogd's {protocol} output")
    (record,) = records
    assert "[bridge test]" in json.dumps(record) and "CEF:0|" in json.dumps(record)
    assert no_state(tmp_path)


async def test_an_unknown_sink_is_a_usage_error(tmp_path: Path) -> None:
    path = config_with(tmp_path, {"name": "screen", "type": "stdout"})
    code, out, err = await sinks_test(path, "nope")
    assert code == 2 and out == []
    assert "no sink named 'nope' (known: screen)" in err
    code, _, err = await sinks_test(path, "screen", "--event", "{not json")
    assert code == 2 and err.startswith("bridge: --event: ")
