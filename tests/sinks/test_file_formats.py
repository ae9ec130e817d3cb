"""The file sink's `format: json | cef | leef` (issue 16): JSON lines by default, byte for byte
what it always wrote; CEF or LEEF records, one per line, exactly the payload the syslog sink
sends with the same settings. Every format passes the sink contract suites, keeps hostile text
to one inert line per event, and works from a real `bridge once`."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import ConfigError, parse_config
from bridge.model import Event
from bridge.sim.common import RunningSim
from bridge.sim.scanorbit import ScanOrbitWorld, make_app
from bridge.sinks.base import Sink, SinkConfig
from bridge.sinks.file import FileSinkConfig
from bridge.sinks.formats.json import encode_json
from bridge.sinks.syslog import SyslogSinkConfig
from tests.conftest import SIM_SCANORBIT_KEY, base_config, scanorbit_source
from tests.security.hostile_text import raw_unsafe
from tests.sinks.test_contract import FileHarness
from tests.support.daemon import run_cli
from tests.support.sink_contract import SinkContract, UnreachableContract
from tests.syslog import expect
from tests.syslog.events import adversarial_events
from tests.syslog.parsers import parse_5424, parse_cef, parse_leef
from tests.syslog.strategies import delimiters, events

pytestmark = pytest.mark.timeout(60)

CUSTOM_CEF = {"vendor": "Acme", "product": "Bridge|Files", "fields": {"request": "raw.url"},
              "cs": [{"label": "region", "path": "attributes.region"}]}


def write(path: Path, batch: Sequence[Event], **settings_: Any) -> str:
    """`batch` through a real file sink with these settings; the file's text."""
    config = FileSinkConfig.model_validate(
        {"name": "archive", "type": "file", "path": str(path), "fsync": "never", **settings_})

    async def send() -> None:
        sink = config.build()
        await sink.send(batch)
        await sink.close()

    asyncio.run(send())
    return path.read_text(encoding="utf-8")


def external_id(line: str, fmt: str) -> str | None:
    if fmt == "cef":
        return parse_cef(line).get("externalId")
    if fmt == "leef":
        return parse_leef(line).get("externalId")
    return str(json.loads(line)["id"])


# --- the contract suites, in CEF and LEEF (JSON runs them in test_contract.py) -----------------

class FormatFileHarness(FileHarness):
    def __init__(self, root: Path, fmt: str) -> None:
        super().__init__(root)
        self.format = fmt

    def sink(self, **overrides: Any) -> Sink[SinkConfig]:
        return super().sink(format=self.format, **overrides)

    def arrived(self) -> list[str]:
        if not self.path.exists():
            return []
        return [external_id(line, self.format) or "" for line in
                self.path.read_text(encoding="utf-8").splitlines()]


class TestFileSinkInCefAndLeef(SinkContract, UnreachableContract):
    @pytest.fixture(params=["cef", "leef"])
    def harness(self, tmp_path: Path, request: pytest.FixtureRequest) -> FormatFileHarness:
        return FormatFileHarness(tmp_path, request.param)


# --- what each format writes -------------------------------------------------------------------

def test_json_lines_by_default_byte_for_byte(tmp_path: Path) -> None:
    batch = adversarial_events()
    default = write(tmp_path / "default.jsonl", batch)
    assert default == write(tmp_path / "json.jsonl", batch, format="json")
    assert default == "".join(encode_json(e) + "\n" for e in batch)  # what it always wrote
    assert [json.loads(line) for line in default.splitlines()] == [
        expect.json_object(e) for e in batch]
    assert FileSinkConfig.model_validate(
        {"name": "a", "type": "file", "path": "x"}).format == "json"


@pytest.mark.parametrize(("fmt", "settings_"), [
    ("cef", {}), ("cef", {"cef": CUSTOM_CEF}),
    ("leef", {}), ("leef", {"leef": {"delimiter": "^", "vendor": "Acme"}}),
])
def test_cef_and_leef_lines_are_the_syslog_payload(tmp_path: Path, fmt: str,
                                                   settings_: dict[str, Any]) -> None:
    """Same settings, same records: the file holds what the syslog sink puts after its
    header, one per line, and each parses strictly."""
    batch = adversarial_events()
    lines = write(tmp_path / "events.log", batch, format=fmt, **settings_).split("\n")
    assert lines.pop() == "" and len(lines) == len(batch)
    syslog = SyslogSinkConfig.model_validate({
        "name": "siem", "type": "syslog", "host": "127.0.0.1", "format": fmt, **settings_}).build()
    for line, e in zip(lines, batch, strict=True):
        ((message, _),) = syslog.messages(e)
        assert parse_5424(message).msg == line
        if fmt == "cef":
            cef = parse_cef(line)
            if settings_:
                assert (cef.vendor, cef.product) == ("Acme", "Bridge|Files")
                url = e.raw.get("url")
                assert cef.get("request") == (expect.cut(url, 1023) if url else None)
                region = e.attributes.get("region")
                assert (cef.get("cs1Label"), cef.get("cs1")) == (
                    ("region", region) if region else (None, None))
            else:
                assert cef.extensions == expect.cef_extensions(e)
        else:
            leef = parse_leef(line)
            assert leef.delimiter == settings_.get("leef", {}).get("delimiter", "\t")
            assert leef.attributes == expect.leef_attributes(e)
            assert leef.vendor == settings_.get("leef", {}).get("vendor", expect.device_name(e))


@settings(max_examples=60, deadline=None)
@given(st.lists(events(), min_size=1, max_size=4), st.sampled_from(["json", "cef", "leef"]),
       delimiters)
def test_one_inert_line_per_event_in_every_format(batch: list[Event], fmt: str,
                                                  delimiter: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        text = write(Path(folder) / "events", batch, format=fmt, leef={"delimiter": delimiter})
    tab = fmt == "cef" or (fmt == "leef" and delimiter == "\t")  # a tab forges no line
    assert raw_unsafe(text, allowed="\n\t" if tab else "\n") == set()
    lines = text.splitlines()
    assert len(lines) == len(batch) == text.count("\n")
    assert [external_id(line, fmt) for line in lines] == [e.id for e in batch]


@pytest.mark.parametrize(("sink", "where"), [
    ({"format": "xml"}, "sinks[0].format"),
    ({"format": "cef", "cef": {"fields": {"act": "title"}}}, "sinks[0].cef.fields"),
    ({"format": "leef", "leef": {"delimiter": "="}}, "sinks[0].leef.delimiter"),
])
def test_bad_format_settings_name_their_yaml_path(tmp_path: Path, sink: dict[str, Any],
                                                  where: str) -> None:
    config = {"sinks": [{"name": "archive", "type": "file", "path": str(tmp_path / "x"), **sink}],
              "routes": {"sinks": ["archive"]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(config)
    assert where in str(caught.value), caught.value


# --- from a real bridge process ----------------------------------------------------------------

async def test_bridge_once_writes_cef_lines(tmp_path: Path) -> None:
    world = ScanOrbitWorld(api_keys={SIM_SCANORBIT_KEY}, seed=3, rate_limit=100_000)
    ids = {world.add_finding(summary=f"Bucket {i} is public | a=b\nc", severity="high")["id"]
           for i in range(3)}
    out = tmp_path / "events.cef"
    async with RunningSim(make_app(world)) as vendor:
        config = base_config(tmp_path, [scanorbit_source(vendor.url)], sinks=[
            {"name": "events", "type": "file", "path": str(out), "format": "cef",
             "cef": {"vendor": "Acme", "fields": {"msg": "title", "request": "raw.id"}}}])
        path = tmp_path / "bridge.yaml"
        path.write_text(yaml.safe_dump(config))
        code, _, err = await run_cli("once", "--config", str(path), "--deliver-timeout", "20")
    assert code == 0, err
    records = [parse_cef(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(ids) and {r.vendor for r in records} == {"Acme"}
    assert {r.get("request") for r in records} == ids
    assert {r.get("msg") for r in records} == {f"Bucket {i} is public | a=b\nc" for i in range(3)}
    assert all(r.get("act") == "new" and r.signature == "finding:new" for r in records)



@settings(max_examples=40, deadline=None)
@given(st.lists(events(), min_size=1, max_size=4), st.sampled_from(["json", "cef", "leef"]))
def test_stored_bodies_make_the_lines_their_events_make(batch: list[Event], fmt: str) -> None:
    """What the worker hands a JSON file (`send_stored`, the outbox bodies undecoded) writes
    what `send` writes for the decoded events, in every format."""
    config = FileSinkConfig.model_validate({"name": "archive", "type": "file", "path": "unused",
                                            "fsync": "never", "format": fmt})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stored"

        async def send() -> None:
            sink = config.model_copy(update={"path": path}).build()
            await sink.send_stored([e.to_json() for e in batch])
            await sink.close()

        asyncio.run(send())
        assert path.read_text(encoding="utf-8") == write(Path(folder) / "sent", batch,
                                                          format=fmt)
    assert config.build().sends_stored_json == (fmt == "json")


async def test_a_json_file_gets_the_outbox_bytes_as_stored(tmp_path: Path) -> None:
    """The worker of a JSON-lines file writes each outbox body as it is stored, never decoded
    and encoded again: a body whose keys are in another order than `Event.to_json` puts
    them (an older version's) arrives in that order, with unsafe characters escaped."""
    from bridge.outbox import SinkWorker
    from bridge.store.sqlite import SQLiteStore
    from tests.core._helpers import make_event
    from tests.support.store_contract import commit_events

    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    a, b = make_event("a", title="line\u2028break"), make_event("b")
    await store.commit_sweep(commit_events((a, ["archive"]), (b, ["archive"])))
    reordered = json.dumps(dict(reversed(json.loads(a.to_json()).items())), ensure_ascii=False,
                           separators=(",", ":"))
    await store._run(lambda conn: conn.execute("UPDATE outbox SET body = ? WHERE event_id = ?",
                                               (reordered, a.id)))
    sink = FileSinkConfig.model_validate({"name": "archive", "type": "file",
                                          "path": str(tmp_path / "events.jsonl")}).build()
    assert await SinkWorker(sink, store).drain() == 0
    await store.close()
    lines = (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines == [reordered.replace("\u2028", "\\u2028"), b.to_json()]
    assert json.loads(lines[0]) == json.loads(a.to_json())
