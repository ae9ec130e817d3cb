"""A sink's payload format, whichever it is: `format: cef | leef | json` with its `cef:` and
`leef:` settings, as one `Formatter` any sink can call."""

from __future__ import annotations

from typing import Literal, Protocol

from bridge.model import Event
from bridge.sinks.formats.cef import CefConfig, cef_encoder
from bridge.sinks.formats.common import Oversize
from bridge.sinks.formats.json import JSON
from bridge.sinks.formats.leef import LeefConfig, leef_encoder

PayloadFormat = Literal["cef", "leef", "json"]


class Formatter(Protocol):
    """One event as text: one record (`encode`), or records of at most `limit` UTF-8 bytes
    each, the event truncated or split (`fit`). Neither returns a line break."""

    def encode(self, event: Event, /) -> str: ...

    def fit(self, event: Event, limit: int, oversize: Oversize, /) -> list[str]: ...


def formatter(fmt: PayloadFormat, cef: CefConfig, leef: LeefConfig) -> Formatter:
    """The (cached, compiled) encoder for `fmt`; the other format's settings are ignored."""
    if fmt == "cef":
        return cef_encoder(cef)
    if fmt == "leef":
        return leef_encoder(leef)
    return JSON
