"""Issue 15, points 6 and 7: text from hostile vendors and receivers neither drives the operator's
terminal nor forges lines, in any human-facing command or any encoder.

The commands are the real `bridge` process against a real state file, filled by `bridge once`
from a hostile ScanOrbit (a finding whose summary carries terminal escapes and line breaks, and
error answers that do too) and a hostile webhook receiver (a 400 whose body does). The encoders
are checked with hypothesis over text drawn from every such character, and end to end through
a real rsyslogd.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.demo import summarize
from bridge.model import Event
from bridge.sim.common import RunningSim
from bridge.sim.faults import Fault
from bridge.sim.scanorbit import ScanOrbitWorld, make_app
from bridge.sinks.file import FileSink, FileSinkConfig, StdoutSink, StdoutSinkConfig
from bridge.sinks.formats.cef import CefConfig, encode_cef, fit_cef
from bridge.sinks.formats.json import encode_json, fit_json
from bridge.sinks.formats.leef import LeefConfig, encode_leef, fit_leef
from bridge.sinks.syslog import SyslogSink, SyslogSinkConfig
from bridge.textsafe import UNSAFE as TEXT_UNSAFE
from bridge.textsafe import UNSAFE_EXCEPT_TAB_LF_CR as TEXT_UNSAFE_EXCEPT_TAB_LF_CR
from bridge.textsafe import printable
from tests.conftest import SIM_SCANORBIT_KEY, base_config, require_binary, scanorbit_source
from tests.security.hostile_text import (
    FORGED,
    FORGED_CEF,
    HOSTILE_CEF_TITLE,
    HOSTILE_TITLE,
    LINE_BREAKS,
    UNSAFE,
    hostile_text,
    raw_unsafe,
)
from tests.support.daemon import run_cli
from tests.support.rsyslogd import Rsyslogd
from tests.support.waiting import wait_until
from tests.syslog import expect
from tests.syslog.checks import check_envelope, check_payload
from tests.syslog.conftest import HOSTNAME, PROCID
from tests.syslog.events import event
from tests.syslog.parsers import parse_3164, parse_5424, parse_cef, parse_leef
from tests.syslog.strategies import events

HOSTILE_CODE = "BAD\x1b[2J\x1b]0;owned\x07\r\n" + FORGED + "\u2028\x85"
HOSTILE_BODY = "nope\x1b]52;c;cm0gLXJmIH4=\x07\r\n" + FORGED + "\x0b\x1e\u2029\u202eend"
# The visible forms the operator must see instead (bridge.textsafe's notation).
VISIBLE = ("\\x1b[2J", "\\x1b]0;owned\\x07", "\\u2028", "\\r")


# --- the shared function -----------------------------------------------------------------------

def test_printable_makes_every_unsafe_character_visible() -> None:
    assert printable("".join(sorted(UNSAFE))).isascii()
    assert printable("a\x1b[2Jb\u2028c\u202ed\x85\t\r\n") == \
        "a\\x1b[2Jb\\u2028c\\u202ed\\x85\\t\\r\\n"
    plain = "Bucket «prod» is public: C:\\data 中文 😀 e\u0301"
    assert printable(plain) is plain  # the fast path: nothing to do, nothing copied


@pytest.mark.parametrize("context", ["", "plain ascii ", "non-ascii é "])
def test_the_fast_test_finds_exactly_the_unsafe_characters(context: str) -> None:
    """Both paths of `found_in` (ASCII text via bytes.translate, other text via isprintable
    and the pattern) agree with the issue's list for every BMP character."""
    for code in range(0x10000):
        char = chr(code)
        if 0xD800 <= code < 0xE000:
            continue  # lone surrogates are no text an event can carry
        text = context + char
        assert TEXT_UNSAFE.found_in(text) == (char in UNSAFE), hex(code)
        assert TEXT_UNSAFE_EXCEPT_TAB_LF_CR.found_in(text) == (
            char in UNSAFE and char not in "\t\n\r"), hex(code)


@given(hostile_text)
def test_printable_leaves_one_inert_line(text: str) -> None:
    shown = printable(text)
    assert raw_unsafe(shown) == set() and shown.splitlines() in ([shown], [])
    # Only unsafe characters change: what is left between the escapes is the text itself.
    assert re.sub(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|[tnr])", "", shown) == \
        re.sub(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|[tnr])", "", "".join(
            c for c in text if c not in UNSAFE))


# --- the human-facing commands ------------------------------------------------------------------

def assert_inert(out: str, line: re.Pattern[str], lines: int) -> None:
    """`out` is `lines` lines that each match `line` (no forged one among them), and holds no
    raw control, line-breaking or bidi character but the LFs that end them."""
    assert raw_unsafe(out, allowed="\n") == set(), out
    assert len(out.splitlines()) == lines == out.count("\n"), out
    assert all(line.match(text) for text in out.splitlines()), out


@contextlib.asynccontextmanager
async def hostile_receiver() -> AsyncIterator[str]:
    """A webhook receiver that refuses every event with a body full of escapes."""

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=400, text=HOSTILE_BODY)

    app = web.Application()
    app.router.add_post("/hook", refuse)
    async with RunningSim(app) as receiver:
        yield f"{receiver.root}/hook"


@dataclass(frozen=True)
class HostileState:
    config: Path
    once: tuple[int, str, str]  # `bridge once` with the stdout sink: (code, stdout, stderr)


async def fill_state(folder: Path) -> HostileState:
    """Two sweeps through the real CLI: one that stores a hostile finding, prints it through
    the stdout sink and dead-letters it at the hostile receiver; one whose vendor answers every
    request with a hostile error code, which the sweep record's notes quote."""
    world = ScanOrbitWorld(api_keys={SIM_SCANORBIT_KEY}, seed=5, rate_limit=100_000)
    world.add_finding(summary=HOSTILE_TITLE, severity="critical")
    world.add_finding(summary="Plain title", severity="low")
    config_path = folder / "bridge.yaml"
    async with RunningSim(make_app(world)) as vendor, hostile_receiver() as hook:
        config = base_config(folder, [scanorbit_source(vendor.url)])
        config.update(log={"format": "json"}, routes={"sinks": ["screen", "hook"]}, sinks=[
            {"name": "screen", "type": "stdout"},
            {"name": "hook", "type": "webhook", "url": hook, "max_attempts": 1}])
        config_path.write_text(yaml.safe_dump(config))
        once = await run_cli("once", "--config", str(config_path), "--deliver-timeout", "20")
        world.faults.add(Fault(kind="status", status=400, code=HOSTILE_CODE, times=-1))
        failing = await run_cli("once", "--config", str(config_path), "--deliver-timeout", "20")
        assert failing[1] == "", failing  # no events: the sweep got nothing
    return HostileState(config_path, once)


@pytest.fixture(scope="module")
def hostile_state(tmp_path_factory: pytest.TempPathFactory) -> HostileState:
    return asyncio.run(fill_state(tmp_path_factory.mktemp("hostile")))


EVENT_LINE = re.compile(r"(NEW|CHANGED|RESOLVED|REOPENED) +(info|low|medium|high|critical) +"
                        r"scanorbit finding ")


def test_stdout_sink_shows_a_hostile_title_inert(hostile_state: HostileState) -> None:
    """What `bridge demo` and any `type: stdout` sink print: one line per event, escaped."""
    code, out, err = hostile_state.once
    assert code == 1, err  # the hostile receiver refused both: dead letters (issue 19's codes)
    assert_inert(out, EVENT_LINE, lines=2)
    assert all(shown in out for shown in VISIBLE)
    assert out.count(FORGED) == 3  # still shown, never at the start of a line of its own


# command -> (the start of each of its rows, the rows' JSON key holding hostile text, its value)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "state items": (r"scope=scanorbit  kind=finding  key=\S+  state=active  ", "title",
                    HOSTILE_TITLE),
    "state sweeps --history": (r"id=\d+  scope=scanorbit  started=\S+  "
                               r"outcome=(complete|incomplete)  ", "notes", HOSTILE_CODE),
    "dlq list": (r"seq=\d+  sink=hook  event=[0-9a-f]+  type=new  title=", "error",
                 HOSTILE_BODY),
}


@pytest.mark.parametrize("command", list(COMMANDS))
async def test_cli_rows_are_inert(hostile_state: HostileState, command: str) -> None:
    start, key, hostile = COMMANDS[command]
    args = (*command.split(), "--config", str(hostile_state.config))
    (code, out, err), (json_code, as_json, _) = await asyncio.gather(
        run_cli(*args), run_cli(*args, "--json"))
    assert code == json_code == 0, err
    rows: list[dict[str, Any]] = json.loads(as_json)
    # The JSON form is exact (and escaped by json.dumps): the hostile text really is stored.
    assert any(hostile in str(row[key]) for row in rows), rows
    assert raw_unsafe(as_json, allowed="\n") == set()
    assert_inert(out, re.compile(start), lines=len(rows))
    assert all(shown in out for shown in VISIBLE)


# --- bridge demo's summary ----------------------------------------------------------------------

async def test_demo_summary_survives_hostile_and_legacy_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.jsonl"
    sink = FileSink(FileSinkConfig(name="events", type="file", path=path))
    hostile = [event(title=HOSTILE_TITLE), event(title=HOSTILE_CEF_TITLE, vendor="scan\x1b[2Jorbit")]
    await sink.send(hostile)
    await sink.close()
    with path.open("ab") as f:
        # As the file sink wrote before issue 15: a raw U+2028 and NEL inside a JSON string,
        # where a splitlines() reader cut the line in three.
        f.write(orjson.dumps(event(title=f"a\u2028b\x85{FORGED}").to_dict()) + b"\n")
        f.write(b"\xff not json \x1b[2J\n\n")
    summarize(path)
    out = capsys.readouterr().out
    assert raw_unsafe(out, allowed="\n") == set(), out
    assert out.strip().splitlines() == [
        f"bridge demo: 3 events (3 new; from 1 scan\\x1b[2Jorbit, 2 scanorbit); "
        f"1 unreadable line(s) skipped; written to {path}"]


# --- every encoder, whatever the text -----------------------------------------------------------

TEXT_FIELDS = ("title", "kind", "key", "source", "vendor", "tenant", "reason", "status",
               "vendor_severity")


@st.composite
def hostile_events(draw: st.DrawFn) -> Event:
    """Any event (tests/syslog/strategies) with every text field drawn from hostile text."""
    base = draw(events())
    text = {name: draw(hostile_text) for name in TEXT_FIELDS}
    attributes = {"host": draw(hostile_text), "user": draw(hostile_text),
                  "ip": draw(hostile_text), draw(hostile_text): draw(hostile_text)}
    return dataclasses.replace(
        base, **text, attributes=attributes, raw={draw(hostile_text): draw(hostile_text)},
        changes={draw(hostile_text): (draw(hostile_text), draw(hostile_text))})


def one_inert_line(text: str, tab: bool) -> None:
    """No raw unsafe character (tab only where a format allows it) and so, for `splitlines()`
    and for a C-string receiver, exactly one line and no NUL."""
    assert raw_unsafe(text, allowed="\t" if tab else "") == set(), repr(text)
    assert text.splitlines() == [text], repr(text)
    assert not LINE_BREAKS & set(text)


@settings(max_examples=150, deadline=None)
@given(hostile_events())
def test_cef_is_one_inert_line(e: Event) -> None:
    text = encode_cef(e, CefConfig())
    one_inert_line(text, tab=True)
    cef = parse_cef(text)  # strict: refuses raw controls; decodes the visible escapes back
    assert cef.extensions == expect.cef_extensions(e)
    assert cef.name == expect.header_text(expect.cut(e.title, 512))


@settings(max_examples=150, deadline=None)
@given(hostile_events(), st.sampled_from(["\t", "^", "~", "#"]))
def test_leef_is_one_inert_line(e: Event, delimiter: str) -> None:
    text = encode_leef(e, LeefConfig(delimiter=delimiter))
    one_inert_line(text, tab=delimiter == "\t")
    assert parse_leef(text).attributes == expect.leef_attributes(e)


@settings(max_examples=150, deadline=None)
@given(hostile_events())
def test_json_is_one_inert_line(e: Event) -> None:
    text = encode_json(e)
    one_inert_line(text, tab=False)
    assert json.loads(text) == expect.json_object(e)


@settings(max_examples=100, deadline=None)
@given(hostile_events(), st.integers(1500, 4000), st.sampled_from(["truncate", "split"]))
def test_fitted_parts_are_one_inert_line_each(e: Event, limit: int, mode: Any) -> None:
    e = dataclasses.replace(e, kind=e.kind[:8], key=e.key[:8], tenant=e.tenant[:8])
    for part in fit_cef(e, CefConfig(), limit, mode) + fit_leef(e, LeefConfig(), limit, mode):
        one_inert_line(part, tab=True)
    for part in fit_json(e, limit, mode):
        one_inert_line(part, tab=False)


def syslog_sink(**overrides: Any) -> SyslogSink:
    return SyslogSinkConfig.model_validate({
        "name": "siem", "type": "syslog", "host": "127.0.0.1", "hostname": HOSTNAME,
        "procid": PROCID, "connect_grace": 0.0, **overrides}).build()


FRAMINGS = [  # (sink settings, header parser)
    ({"rfc": 5424, "structured_data": True}, lambda t: parse_5424(t).msg),
    ({"rfc": 3164}, lambda t: parse_3164(t, tagged=False).msg),
]


@settings(max_examples=60, deadline=None)
@given(st.lists(hostile_events(), min_size=1, max_size=4), st.sampled_from(["cef", "leef", "json"]),
       st.sampled_from(range(len(FRAMINGS))))
def test_lf_framed_stream_has_one_line_per_event(batch: list[Event], fmt: str,
                                                 framing: int) -> None:
    """LF framing is what a `splitlines()` receiver reads: one line per event, none forged."""
    settings_, header = FRAMINGS[framing]
    if fmt == "json" and framing == 1:
        header = lambda t: parse_3164(t, tagged=True).msg  # noqa: E731 - JSON gets a tag
    chunks, rejected = syslog_sink(format=fmt, framing="lf", **settings_).frame(batch)
    assert rejected == {}
    data = b"".join(chunks)
    assert b"\x00" not in data
    lines = data.decode().splitlines()
    assert len(lines) == len(batch) and data.count(b"\n") == len(batch)
    for text, e in zip(lines, batch, strict=True):
        one_inert_line(text, tab=True)
        msg = header(text)  # strict parsers: no raw control character anywhere
        if fmt == "json":
            assert json.loads(msg)["id"] == e.id


@settings(max_examples=60, deadline=None)
@given(st.lists(hostile_events(), min_size=1, max_size=4))
def test_octet_counted_and_udp_messages_are_one_line_each(batch: list[Event]) -> None:
    data = b"".join(syslog_sink(structured_data=True).frame(batch)[0])
    messages, pos = [], 0
    while pos < len(data):
        space = data.index(b" ", pos)
        end = space + 1 + int(data[pos:space])
        messages.append(data[space + 1:end].decode())
        pos = end
    datagrams = [d.decode() for d in syslog_sink(protocol="udp", oversize="split")
                 .frame(batch)[0]]
    assert len(messages) == len(batch) <= len(datagrams)
    for text in messages + datagrams:
        one_inert_line(text, tab=True)
        parse_cef(parse_5424(text).msg)


@settings(max_examples=60, deadline=None)
@given(st.lists(hostile_events(), min_size=1, max_size=4))
def test_file_sink_writes_one_inert_line_per_event(batch: list[Event]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        sink = FileSink(FileSinkConfig(name="file", type="file", path=path, fsync="never"))

        async def write() -> None:
            await sink.send(batch)
            await sink.close()

        asyncio.run(write())
        text = path.read_text(encoding="utf-8")
    assert raw_unsafe(text, allowed="\n") == set()
    lines = text.splitlines()
    assert len(lines) == len(batch) == text.count("\n")
    assert [json.loads(line) for line in lines] == [expect.json_object(e) for e in batch]


@settings(max_examples=60, deadline=None)
@given(st.lists(hostile_events(), min_size=1, max_size=4), st.sampled_from(["text", "json"]))
def test_stdout_sink_writes_one_inert_line_per_event(batch: list[Event], fmt: Any) -> None:
    stream = io.StringIO()
    sink = StdoutSink(StdoutSinkConfig(name="screen", type="stdout", format=fmt), stream)
    asyncio.run(sink.send(batch))
    out = stream.getvalue()
    assert raw_unsafe(out, allowed="\n") == set()
    lines = out.splitlines()
    assert len(lines) == len(batch) == out.count("\n")
    for line, e in zip(lines, batch, strict=True):
        if fmt == "json":
            assert json.loads(line) == expect.json_object(e)
        else:
            assert line.startswith(f"{e.type.value.upper():9} {e.severity:8} ")


# --- a real receiver ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslogd]:
    daemon = Rsyslogd(require_binary("rsyslogd", "/usr/sbin/rsyslogd"),
                      tmp_path_factory.mktemp("rsyslog"))
    daemon.start()
    yield daemon
    daemon.stop()


def read_records(path: Path, since: int) -> list[dict[str, Any]]:
    data = path.read_bytes()[since:] if path.exists() else b""
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


@pytest.mark.parametrize("fmt", ["cef", "leef", "json"])
@pytest.mark.parametrize("transport", ["tcp-lf", "tcp-octets", "udp"])
async def test_rsyslogd_receives_one_message_per_hostile_event(
        receiver: Rsyslogd, fmt: str, transport: str) -> None:
    protocol = transport.split("-")[0]
    output = receiver.output(protocol)
    mark = output.stat().st_size if output.exists() else 0
    sink = syslog_sink(format=fmt, protocol=protocol, port=receiver.ports[protocol],
                       framing="lf" if transport == "tcp-lf" else "octet_counting",
                       max_message_size=8192)
    hostile = event(title=HOSTILE_CEF_TITLE, key=HOSTILE_TITLE, reason=HOSTILE_BODY,
                    attributes={"host": HOSTILE_CODE, "user": FORGED_CEF})
    sentinel = event(title="sentinel")  # sent after: once it is in, so is everything before
    await sink.open()
    try:
        await sink.send([hostile, sentinel])
    finally:
        await sink.close()
    await wait_until(lambda: any(sentinel.id in r["raw"] for r in read_records(output, mark)),
                     15, "the sentinel reached rsyslogd", every=0.02)
    records = read_records(output, mark)
    assert [r["raw"].count(hostile.id) > 0 for r in records] == [True, False]  # no forged one
    (record,) = [r for r in records if hostile.id in r["raw"]]
    assert "#000" not in record["raw"]  # how rsyslog shows a NUL it received
    check_payload(check_envelope(record, hostile, rfc=5424, fmt=fmt), hostile, fmt)
