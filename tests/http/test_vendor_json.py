"""Vendor JSON decoding: exact on well-formed answers, repaired where a vendor's mistake is
safe to repair, refused otherwise, and whatever it returns can always be stored."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.diff import snapshot_json
from bridge.model import Item
from bridge.vendor_json import MAX_DEPTH, TOO_DEEP, Undecodable, decode

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def storable(value: Any) -> bool:
    """Whether the value, as an item's raw object, survives the store and an event."""
    item = Item(kind="k", key="k", title="t", severity="low", active=True, raw={"v": value})
    orjson.loads(snapshot_json(item))
    return True


@given(JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_well_formed_json_decodes_exactly_and_unrepaired(value: Any) -> None:
    decoded = decode(orjson.dumps(value))
    assert decoded.value == value and decoded.repairs == frozenset()


@pytest.mark.parametrize(("raw", "expected", "repairs"), [
    (b'{"a": "x\\ud83d"}', {"a": "x\ufffd"}, {"lone_surrogate"}),
    (b'{"\\udc00k": "\\ud83d\\ude00"}', {"\ufffdk": "\U0001f600"}, {"lone_surrogate"}),
    (b'{"a": "caf\xe9"}', {"a": "caf\ufffd"}, {"invalid_utf8"}),
    (b'[1e999, -1e999, NaN, Infinity, 1.5]', ["1e999", "-1e999", "NaN", "Infinity", 1.5],
     {"number"}),
    (b'["\xff", 1e999, "\\ud800"]', ["\ufffd", "1e999", "\ufffd"],
     {"invalid_utf8", "number", "lone_surrogate"}),
])
def test_what_a_careless_vendor_sends_is_repaired(raw: bytes, expected: Any,
                                                  repairs: set[str]) -> None:
    decoded = decode(raw)
    assert decoded.value == expected and decoded.repairs == repairs
    assert storable(decoded.value)


def test_integers_read_as_orjson_reads_them_also_on_the_lenient_path() -> None:
    """Beyond 64 bits orjson gives a double; the fallback (here forced by a bad byte) too."""
    numbers = b"18446744073709551615, -9223372036854775808, 123456789012345678901234567890"
    lenient = decode(b"[" + numbers + b', "\xff"]')
    assert lenient.repairs == {"invalid_utf8"}
    assert lenient.value[:3] == orjson.loads(b"[" + numbers + b"]")


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH])
def test_nesting_up_to_the_bound_is_kept(depth: int) -> None:
    decoded = decode(nested(depth))
    assert depth_of(decoded.value) == depth and decoded.repairs == frozenset()


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 1000])
def test_deeper_nesting_is_cut_at_the_bound_and_storable(depth: int) -> None:
    """300 levels parse (orjson reads 1024) but could not be written back (orjson writes 254):
    that crashed the sweep when the snapshot was stored."""
    decoded = decode(b'{"id": "f1", "details": ' + nested(depth) + b"}")
    assert decoded.repairs == {"too_deep"}
    assert decoded.value["id"] == "f1"
    assert depth_of(decoded.value) == MAX_DEPTH  # the marker string sits at the bound
    innermost = decoded.value["details"]
    while isinstance(innermost, list):
        innermost = innermost[0]
    assert innermost == TOO_DEEP and storable(decoded.value)


def test_deep_nesting_with_a_bad_byte_is_cut_on_the_lenient_path_too() -> None:
    decoded = decode(b'{"a": ' + nested(600) + b', "b": "\xff"}')
    assert decoded.repairs == {"too_deep", "invalid_utf8"} and storable(decoded.value)


@pytest.mark.parametrize("raw", [b"<html>502</html>", b'{"data": [', nested(5000), b""])
def test_what_is_not_json_is_refused(raw: bytes) -> None:
    with pytest.raises(Undecodable):
        decode(raw)


@given(JSON_VALUES, st.data())
@settings(max_examples=300, deadline=None)
def test_any_mangling_is_either_refused_or_storable(value: Any, data: st.DataObject) -> None:
    """Poison spliced anywhere into a valid answer: never an exception but `Undecodable`,
    never a value the store cannot write."""
    raw = json.dumps(value).encode()
    at = data.draw(st.integers(0, len(raw)))
    poison = data.draw(st.sampled_from(
        [b"\xff", b"\xe9", b"\\ud83d", b'"\\udc00"', b"1e999", b"-1e999", nested(300), b'"',
         b"NaN", b"\x00", b"9" * 400]))
    try:
        decoded = decode(raw[:at] + poison + raw[at:])
    except Undecodable:
        return
    assert storable(decoded.value)


# Any size of integer (the fast decoder keeps big ones as ints, orjson does not), text with
# escapes or without, and the poisons above: whatever orjson reads as it is, `decode` must
# return as orjson returns it, down to int against float and key order.
WIDE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def strictly(value: Any) -> bytes:
    return orjson.dumps(value)  # 1 and 1.0 differ, so do {"a", "b"} and {"b", "a"}


@given(WIDE_VALUES, st.booleans(), st.data())
@settings(max_examples=400, deadline=None)
def test_what_orjson_reads_unrepaired_decodes_exactly_as_orjson_reads_it(
        value: Any, ascii_only: bool, data: st.DataObject) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(raw)))
        raw = raw[:at] + data.draw(st.sampled_from(
            [b"\xff", b"\\ud83d", b"1e999", b"18446744073709551616", b"-0", b" ", b"\t"]
        )) + raw[at:]
    try:
        expected = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return  # the lenient path: the tests above
    decoded = decode(raw)
    assert decoded.repairs == frozenset() and strictly(decoded.value) == strictly(expected)


@pytest.mark.parametrize("raw", [b"18446744073709551616", b"-9223372036854775809",
                                 b'{"n": [123456789012345678901234567890, 1]}'])
def test_integers_beyond_64_bits_become_doubles_as_orjson_makes_them(raw: bytes) -> None:
    decoded = decode(raw)
    assert strictly(decoded.value) == strictly(orjson.loads(raw)) and storable(decoded.value)


def test_a_bytearray_decodes_as_bytes_do() -> None:
    """What the HTTP client hands over is a bytearray."""
    raw = b'{"data": [{"id": "f1", "n": 18446744073709551616}], "x": "\\ud83d\\ude00"}'
    assert strictly(decode(bytearray(raw)).value) == strictly(decode(raw).value)
