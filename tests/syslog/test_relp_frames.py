"""RELP at the byte level (librelp's doc/relp.md): frames as librelp writes and reads them,
cut anywhere by the network, and everything that is not a frame refused."""

from __future__ import annotations

import pytest

from bridge.sinks.relp import (
    MAX_TXNR,
    Frame,
    FrameReader,
    RelpProtocolError,
    encode,
    next_txnr,
    offers,
    parse_offers,
    parse_response,
)

OPEN_ANSWER = b"200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n" \
              b"commands=syslog"


def test_frames_are_written_as_librelp_writes_them() -> None:
    assert encode(1, "open", b"relp_version=0") == b"1 open 14 relp_version=0\n"
    assert encode(7, "syslog", b"<14>1 - - - - - - hi") == b"7 syslog 20 <14>1 - - - - - - hi\n"
    assert encode(9, "close") == b"9 close 0\n"  # no SP and no data for a zero length


def test_the_open_offers_name_version_software_and_the_syslog_command() -> None:
    offered = parse_offers(offers())
    assert offered["relp_version"] == ("0",)
    assert offered["commands"] == ("syslog",)
    assert offered["relp_software"][0] == "bridge"


def test_an_open_answer_reads_as_code_text_and_offers() -> None:
    code, text, rest = parse_response(OPEN_ANSWER)
    assert (code, text) == (200, "OK")
    assert parse_offers(rest) == {
        "relp_version": ("0",), "commands": ("syslog",),
        "relp_software": ("librelp", "1.11.0", "http://librelp.adiscon.com")}
    assert parse_response(b"500 error 12 on connect") == (500, "error 12 on connect", b"")
    with pytest.raises(RelpProtocolError):
        parse_response(b"20 OK")


def test_transaction_numbers_run_to_999999999_then_start_at_1() -> None:
    assert next_txnr(0) == 1 and next_txnr(41) == 42
    assert next_txnr(MAX_TXNR) == 1


STREAM = [Frame(1, "rsp", OPEN_ANSWER), Frame(2, "rsp", b"200 OK"), Frame(0, "serverclose", b""),
          Frame(3, "rsp", b"500 error\nwith\nlines")]


def test_frames_are_read_back_however_the_stream_is_cut() -> None:
    data = b"".join(encode(f.txnr, f.command, f.data) for f in STREAM)
    for cut in range(len(data) + 1):
        reader = FrameReader()
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == STREAM, cut
    reader = FrameReader()  # and one byte at a time
    assert [frame for byte in data for frame in reader.feed(bytes([byte]))] == STREAM


def test_a_frame_whose_data_holds_what_looks_like_a_header_stays_one_frame() -> None:
    tricky = b"1 rsp 0\n2 syslog 5 x\n\n"
    reader = FrameReader()
    assert reader.feed(encode(4, "rsp", tricky)) == [Frame(4, "rsp", tricky)]


@pytest.mark.parametrize("garbage", [
    b"x rsp 0\n",  # a transaction number that is no number
    b" 1 rsp 0\n",  # an empty one
    b"1234567890 rsp 0\n",  # ten digits
    b"1 r1p 0\n",  # a command that is not letters
    b"1 " + b"r" * 33 + b" 0\n",  # longer than 32
    b"1 rsp 0 \n",  # a zero length followed by data
    b"1 rsp 1234567890 ",  # a ten-digit length
    b"1 rsp 6X200 OK\n",  # no SP after the length
    b"1 rsp 6 200 OKX",  # no LF where the data ends
    b"1 rsp \n",  # no length at all
    b"HTTP/1.1 400 Bad Request\r\n",  # not a RELP server
])
def test_anything_that_is_not_a_frame_is_refused(garbage: bytes) -> None:
    with pytest.raises(RelpProtocolError):
        FrameReader().feed(garbage)


def test_an_answer_longer_than_the_cap_is_refused_before_it_is_buffered() -> None:
    reader = FrameReader(max_data=1000)
    with pytest.raises(RelpProtocolError, match="1001-byte frame"):
        reader.feed(b"1 rsp 1001 ")


def test_an_incomplete_frame_waits_for_the_rest() -> None:
    reader = FrameReader()
    assert reader.feed(b"12 rsp 6 200") == []
    assert reader.feed(b" OK\n3") == [Frame(12, "rsp", b"200 OK")]
    assert reader.feed(b" rsp 0\n") == [Frame(3, "rsp", b"")]
