"""The pure encoders against the strict test parsers: no socket, every hostile input."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from pydantic import ValidationError

from bridge.model import Event
from bridge.sinks.formats.cef import CefConfig, encode_cef
from bridge.sinks.formats.json import encode_json
from bridge.sinks.formats.leef import LeefConfig, encode_leef
from tests.syslog import expect
from tests.syslog.events import SPECIALS, TEN_KB_2, TEN_KB_3, TEN_KB_ESC, event
from tests.syslog.parsers import ParseError, parse_cef, parse_cef_extensions, parse_leef
from tests.syslog.strategies import delimiters, events

DEFAULT_CEF = CefConfig()
DEFAULT_LEEF = LeefConfig()


@settings(max_examples=200, deadline=None)
@given(events())
def test_cef_round_trips_any_event(e: Event) -> None:
    cef = parse_cef(encode_cef(e, DEFAULT_CEF))
    assert {k: getattr(cef, k) for k in expect.cef_header(e)} == expect.cef_header(e)
    assert cef.extensions == expect.cef_extensions(e)


@settings(max_examples=200, deadline=None)
@given(events(), delimiters)
def test_leef_round_trips_any_event(e: Event, delimiter: str) -> None:
    leef = parse_leef(encode_leef(e, LeefConfig(delimiter=delimiter)))
    assert leef.delimiter == delimiter
    assert leef.event_id == expect.leef_header_text(f"{e.kind}:{e.type.value}")
    assert leef.attributes == expect.leef_attributes(e)


@settings(max_examples=100, deadline=None)
@given(events())
def test_json_is_the_stable_shape(e: Event) -> None:
    text = encode_json(e)
    assert "\n" not in text and "\r" not in text
    assert json.loads(text) == expect.json_object(e)
    # The outbox's compact form, with only the characters orjson leaves raw (DEL, C1,
    # U+2028/2029, bidi controls) escaped as \uXXXX.
    assert json.loads(text) == json.loads(e.to_json())
    if e.to_json().isprintable():
        assert text == e.to_json()


def test_cef_escapes_every_special_character() -> None:
    e = event(title="a|b\\c=d\ne\rf", key="x=y\\z|w\nv\rq")
    text = encode_cef(e, DEFAULT_CEF)
    assert "|a\\|b\\\\c=d e f|" in text  # header: \| and \\, line breaks become spaces
    assert " flexString1=x\\=y\\\\z|w\\nv\\rq " in text  # extension: \= \\ \n \r, pipes stay
    assert parse_cef(text).get("flexString1") == "x=y\\z|w\nv\rq"


def test_cef_lengths_follow_the_spec_and_cut_whole_characters() -> None:
    e = event(title=TEN_KB_2, key=TEN_KB_3, status=TEN_KB_ESC,
              attributes={"host": TEN_KB_ESC, "user": TEN_KB_2, "region": TEN_KB_3})
    cef = parse_cef(encode_cef(e, DEFAULT_CEF))
    assert cef.name == "a" + "é" * 255  # 511 bytes: the next é would make 513 > 512
    assert cef.get("msg") == "a" + "é" * 511  # exactly 1023 bytes
    assert cef.get("cs6") == "ab" + "中" * 1332  # 3998 bytes <= 4000
    assert cef.get("flexString1") == "ab" + "中" * 340  # 1022 bytes <= 1023
    assert cef.get("cs4") == TEN_KB_ESC[:4000]  # limits count unescaped bytes
    assert cef.get("dhost") == TEN_KB_ESC[:1023]
    assert len(cef.get("duser") or "") == 512  # "a" + 511 é = 1023 bytes


def test_cef_max_field_length_caps_everything() -> None:
    e = event(title=SPECIALS * 10, key=TEN_KB_3, tenant=TEN_KB_ESC)
    cef = parse_cef(encode_cef(e, CefConfig(max_field_length=20)))
    assert len(cef.name.encode()) <= 20
    assert all(len(v.encode()) <= 20 for _, v in cef.extensions)
    assert cef.get("cs2") == TEN_KB_ESC[:20]


def test_cef_custom_fields_and_raw_mappings() -> None:
    config = CefConfig(
        vendor="Acme|Sec\\urity", product="Bridge", version="2",
        fields={"request": "raw.finding.url", "dvchost": ["attributes.none", "attributes.host"],
                "cnt": "raw.count", "dpt": "raw.finding.url"},
        cs=[{"label": "changed", "path": "changes.severity"},
            {"label": "region=eu", "path": "attributes.region"}],
        cn=[{"label": "risk", "path": "raw.risk"}, {"label": "notanumber", "path": "title"}],
    )
    e = event(raw={"finding": {"url": "https://x.test/a=b"}, "count": 3, "risk": -12},
              changes={"severity": ("high", "critical")})
    cef = parse_cef(encode_cef(e, config))
    assert (cef.vendor, cef.product, cef.device_version) == ("Acme|Sec\\urity", "Bridge", "2")
    assert cef.get("request") == "https://x.test/a=b"
    assert cef.get("dvchost") == "web-01"  # first path with a value wins
    assert cef.get("cnt") == "3"
    assert cef.get("dpt") is None  # numeric key, non-numeric value: left out
    assert cef.get("cs1") == '["high","critical"]' and cef.get("cs1Label") == "changed"
    assert cef.get("cs2Label") == "region=eu" and cef.get("cs2") == "eu-west-1"
    assert (cef.get("cn1Label"), cef.get("cn1")) == ("risk", "-12")
    assert cef.get("cn2") is None and cef.get("cn2Label") is None


@pytest.mark.parametrize("fields", [
    {"bad key": "title"}, {"act": "title"}, {"cs1": "title"}, {"bridgePart": "title"},
    {"msg": "nope"}, {"msg": "attributes"}, {"msg": ["title", "raw"]},
])
def test_cef_field_mapping_is_validated(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CefConfig(fields=fields)


def test_cef_has_at_most_six_cs_and_three_cn() -> None:
    with pytest.raises(ValidationError):
        CefConfig(cs=[{"label": "x", "path": "title"}] * 7)
    with pytest.raises(ValidationError):
        CefConfig(cn=[{"label": "x", "path": "counter"}] * 4)


def test_leef_delimiter_forms() -> None:
    assert LeefConfig(delimiter="x5E").delimiter == "^"
    assert LeefConfig(delimiter="0x09").delimiter == "\t"
    # Refused: what would be ambiguous, and what the unescaped devTime and devTimeFormat hold.
    for bad in ["", "ab", "=", "\\", "|", "a", "7", "\n", "\x00", "-", ":", ".", "'", "+"]:
        with pytest.raises(ValidationError):
            LeefConfig(delimiter=bad)


def test_leef_never_lets_the_delimiter_into_a_value() -> None:
    e = event(title="a^b\tc\\d\ne", key="^^")
    text = encode_leef(e, LeefConfig(delimiter="^"))
    assert text.startswith("LEEF:2.0|ScanOrbit|ScanOrbit|0.1.0|finding:new|^|devTime=")
    assert "title=a\\x5eb\\tc\\\\d\\ne^" in text
    leef = parse_leef(text)
    assert leef.get("title") == "a^b\tc\\d\ne" and leef.get("itemKey") == "^^"
    assert parse_leef(encode_leef(e, DEFAULT_LEEF)).delimiter == "\t"
    assert "|x09|" in encode_leef(e, DEFAULT_LEEF)


def test_leef_header_holds_no_tab() -> None:
    """Not even with a tab delimiter: only the attributes' delimiters are raw tabs."""
    for delimiter, shown in (("\t", "x09"), ("^", "^")):
        text = encode_leef(event(kind="a\tb"), LeefConfig(delimiter=delimiter, vendor="V\tX"))
        assert text.startswith(f"LEEF:2.0|V X|ScanOrbit|0.1.0|a b:new|{shown}|devTime=")
        assert parse_leef(text).event_id == "a b:new"


def test_json_is_strict_json_even_for_nan() -> None:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    text = encode_json(event(raw={"score": math.nan, "big": math.inf}))
    assert json.loads(text, parse_constant=refuse)["raw"] == {"score": None, "big": None}


def test_strict_parser_rejects_what_the_spec_forbids() -> None:
    """The checks above mean something only if the parser is strict."""
    for bad in ["k=a=b", "k=a\\|b", "k=a\nb", "k=a\\", "=v", "k=v\\x", " k=v"]:
        with pytest.raises(ParseError):
            parse_cef_extensions(bad)
    with pytest.raises(ParseError):
        parse_cef("CEF:0|a|b|c|d|e\\=|1|")
    with pytest.raises(ParseError):
        parse_leef("LEEF:2.0|a|b|c|d|^|k=a\tb")
