"""The storm guard on a sink without digests of its own (a JSON-lines or CEF file here; syslog
in tests/syslog/test_rsyslog_storm_guard.py): off unless `max_events_per_minute` is set, and
then the excess becomes one summary in the sink's own format, while every summarised event is
listed by `bridge state summarised` and `bridge dlq list`, and a plain `bridge dlq replay`
leaves them alone (sending them all at once would be the storm)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from bridge.grouping import STORM_KIND, StormSummary, summary_event
from bridge.model import EventType
from bridge.outbox import SinkWorker
from bridge.sinks.file import FileSinkConfig
from bridge.sinks.slack import SlackSinkConfig
from bridge.sinks.syslog import SyslogSinkConfig
from bridge.store.sqlite import SQLiteStore
from tests.core._helpers import make_event
from tests.support.daemon import run_cli
from tests.support.sink_contract import commit

pytestmark = pytest.mark.timeout(60)


def file_sink(path: Path, **kw: Any) -> Any:
    return FileSinkConfig.model_validate({"name": "archive", "type": "file", "path": str(path),
                                          **kw}).build()


def test_the_guard_is_off_for_files_and_syslog_and_on_for_chat_unless_configured() -> None:
    archive = FileSinkConfig.model_validate({"name": "a", "type": "file", "path": "/tmp/x"})
    siem = SyslogSinkConfig.model_validate({"name": "s", "type": "syslog", "host": "siem"})
    chat = SlackSinkConfig.model_validate({"name": "c", "type": "slack",
                                           "webhook_url": "https://hooks.slack.com/x/y/z"})
    assert archive.max_events_per_minute is None and siem.max_events_per_minute is None
    assert not archive.grouping and not siem.grouping
    assert chat.max_events_per_minute == 60
    assert SyslogSinkConfig.model_validate({"name": "s", "type": "syslog", "host": "siem",
                                            "max_events_per_minute": 500}).grouping


def test_a_summary_event_carries_the_counts_the_top_items_and_every_id() -> None:
    events = [make_event(f"k{i}", severity=("low", "critical", "medium")[i % 3])
              for i in range(7)]
    summary = StormSummary("siem", tuple(events), limit=5, top_n=2)
    event = summary_event(summary)
    assert (event.type, event.kind, event.id, event.severity) == (
        EventType.SUMMARY, STORM_KIND, summary.id, "critical")
    assert event.title == ("Event storm: 7 events summarised (over 5/minute): 2 critical, "
                           "2 medium, 3 low")
    assert dict(event.attributes) == {"total": 7, "limit_per_minute": 5, "severity_critical": 2,
                                      "severity_medium": 2, "severity_low": 3, "source_so": 7}
    assert [t["key"] for t in event.raw["top"]] == ["k1", "k4"]
    assert event.raw["event_ids"] == [e.id for e in events]
    assert summary_event(summary).id == event.id  # sent again after a crash: the same event
    assert event.reason.endswith(f"`bridge state summarised --sink siem --summary {summary.id}`")


async def test_a_storm_into_a_json_lines_file_leaves_the_budget_and_one_summary_line(
        store: SQLiteStore, tmp_path: Path) -> None:
    events = [make_event(f"k{i}", severity=("low", "high")[i % 2]) for i in range(25)]
    await commit(store, events, "archive")
    out = tmp_path / "events.jsonl"
    worker = SinkWorker(file_sink(out, max_events_per_minute=10, summary_interval=0.2), store)
    assert worker.grouper is not None
    assert await asyncio.wait_for(worker.drain(), 20) == 0
    lines = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in lines[:10]] == [e.id for e in events[:10]]
    (summary,) = lines[10:]
    assert (summary["type"], summary["kind"], summary["attributes"]["total"]) == (
        "summary", "storm", 15)
    assert summary["raw"]["event_ids"] == [e.id for e in events[10:]]
    assert (worker.delivered, worker.summarised, worker.dead) == (10, 15, 0)
    (stats,) = await store.queue_stats()
    assert (stats.depth, stats.dead, stats.summarised) == (0, 0, 15)
    carried = await store.dead_letters(summarised=True, limit=100)
    assert {d.summary for d in carried} == {summary["id"]}


async def test_a_cef_file_gets_its_summary_as_a_cef_record(
        store: SQLiteStore, tmp_path: Path) -> None:
    events = [make_event(f"k{i}") for i in range(6)]
    await commit(store, events, "archive")
    out = tmp_path / "events.cef"
    worker = SinkWorker(file_sink(out, format="cef", max_events_per_minute=4,
                                  summary_interval=0.1), store)
    assert await asyncio.wait_for(worker.drain(), 20) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 5 and all(line.startswith("CEF:0|") for line in lines)
    (carried, *_) = await store.dead_letters(summarised=True)
    assert carried.summary is not None and carried.summary in lines[4]
    assert "Event storm: 2 events summarised (over 4/minute)" in lines[4]


async def test_summarised_events_are_listed_and_a_plain_replay_leaves_them(
        store: SQLiteStore, tmp_path: Path) -> None:
    earlier = make_event("earlier")  # carried by an earlier storm's summary
    await commit(store, [earlier], "archive")
    await store.bury("archive", [d.seq for d in await store.claim("archive", 1)],
                     "summarised: an earlier storm", summary="sm-earlier")
    events = [make_event(f"k{i}") for i in range(8)]
    await commit(store, events, "archive")
    out = tmp_path / "events.jsonl"
    worker = SinkWorker(file_sink(out, max_events_per_minute=3, summary_interval=0.1), store)
    assert await asyncio.wait_for(worker.drain(), 20) == 0
    refused = make_event("refused")  # and one real dead letter beside them
    await commit(store, [refused], "archive")
    (row,) = await store.claim("archive", 10)
    await store.bury("archive", [row.seq], "rejected: for the test")
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump({
        "state": {"path": str(store.path)}, "sources": [],
        "sinks": [{"name": "archive", "type": "file", "path": str(out)}],
        "routes": {"sinks": ["archive"]}}))

    async def cli(*args: str) -> Any:
        code, stdout, err = await run_cli(*args, "--json", "--config", str(config))
        assert code == 0, err
        return json.loads(stdout)

    (summary_id,) = {d.summary for d in await store.dead_letters(summarised=True)} - {
        "sm-earlier"}
    # What one summary carried (the limit counts its events, not the earlier storm's).
    listed = await cli("state", "summarised", "--sink", "archive", "--summary", summary_id,
                       "--limit", "4")
    assert [r["event"] for r in listed] == [e.id for e in events[3:7]]
    assert {r["summary"] for r in listed} == {summary_id}
    assert summary_id.startswith("sm-") and listed[0]["title"] == events[3].title
    both = {r["event"]: r["summary"] for r in await cli("dlq", "list")}
    assert both == {refused.id: "", earlier.id: "sm-earlier",
                    **{e.id: summary_id for e in events[3:]}}
    code, stdout, err = await run_cli("dlq", "replay", "--config", str(config))
    assert code == 0 and stdout.startswith("replayed 1 dead letter(s)"), err
    assert len(await store.dead_letters(summarised=True)) == 6  # still there, not re-sent
    assert [d.event.key for d in await store.claim("archive", 10)] == ["refused"]
