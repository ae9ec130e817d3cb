"""QRadar LEEF 2.0: `LEEF:2.0|Vendor|Product|Version|kind:type|delim|attributes`.

LEEF defines no value escaping; ours keeps every value on one line and never lets the delimiter
appear inside one (it becomes `\\xHH`), so even a naive splitting parser stays aligned. The
header is escaped as CEF's is, a tab becoming a space.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator

from bridge.components import StrictModel
from bridge.model import Event
from bridge.sinks.formats.builders import COMPILED, Implementation, Spec
from bridge.sinks.formats.cef import HEADER_ESCAPES as CEF_HEADER_ESCAPES
from bridge.sinks.formats.common import UNLIMITED, KvRecord, Oversize, PerConfig
from bridge.sinks.formats.device import device
from bridge.sinks.formats.fields import CANDIDATES, FieldMap, check_field_map
from bridge.sinks.formats.kv import KvEncoder, field_specs
from bridge.version import __version__

LEEF_FIXED_KEYS = ("devTime", "devTimeFormat", "externalId")
_RESERVED = frozenset({*LEEF_FIXED_KEYS, "sev", "cat"})
LEEF_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSZ"
# What `devTime` and `devTimeFormat`, which are not escaped (a SIEM must read the date), hold
# besides letters and digits: a delimiter among them would cut every event apart.
_IN_TIMES = "-:.'+"
# CEF's header escaping, and a tab as a space like the line breaks: raw, it could pass for the
# attributes' delimiter.
HEADER_ESCAPES = (*CEF_HEADER_ESCAPES, ("\t", " "))


def value_escapes(delimiter: str) -> tuple[tuple[str, str], ...]:
    """Backslash, line breaks and tab as `\\\\`, `\\n`, `\\r`, `\\t`; the delimiter as `\\xHH`."""
    pairs = (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
    return pairs if delimiter == "\t" else (*pairs, (delimiter, f"\\x{ord(delimiter):02x}"))


def _default_fields() -> FieldMap:
    return {
        "eventType": "type", "source": "source", "vendor": "vendor", "tenant": "tenant",
        "itemKey": "key", "itemUid": "item_uid", "title": "title",
        "vendorSeverity": "vendor_severity", "status": "status", "reason": "reason",
        "counter": "counter", "src": list(CANDIDATES["ip"]),
        "identHostName": list(CANDIDATES["host"]), "usrName": list(CANDIDATES["user"]),
        # LEEF 2.0 predefined keys, then ours where LEEF has none (LEEF allows custom keys).
        "url": list(CANDIDATES["url"]), "accountName": list(CANDIDATES["account_name"]),
        "resource": list(CANDIDATES["resource"]), "awsAccount": list(CANDIDATES["account"]),
        "region": list(CANDIDATES["region"]),
    }


class LeefConfig(StrictModel):
    """LEEF 2.0 settings. `devTime`/`devTimeFormat`, `externalId` (event id), `sev` (1-10) and
    `cat` (item kind) are always set; `fields` maps further attributes to dotted paths.
    Vendor/Product default to the event's vendor (`bridge.sinks.formats.device`)."""

    vendor: str | None = Field(default=None, min_length=1)
    product: str | None = Field(default=None, min_length=1)
    version: str = Field(default=__version__, min_length=1)
    # One character, or its hex form (`x09`, `0x5E`) as the LEEF header itself allows.
    delimiter: str = "\t"
    fields: FieldMap = Field(default_factory=_default_fields)
    max_field_length: int | None = Field(default=None, ge=16)

    @field_validator("delimiter", mode="before")
    @classmethod
    def _delimiter(cls, value: Any) -> Any:
        if isinstance(value, str) and re.fullmatch(r"(0x|x)[0-9A-Fa-f]{1,4}", value):
            value = chr(int(value.split("x", 1)[1], 16))
        if not isinstance(value, str) or len(value) != 1:
            raise ValueError("delimiter must be one character or its hex form like x09")
        printable = value.isprintable() or value == "\t"
        if value.isalnum() or value in "=\\|\r\n\x00" or not printable:
            raise ValueError(f"delimiter {value!r} would be ambiguous; use e.g. a tab, ^ or ~")
        if value in _IN_TIMES:
            raise ValueError(f"delimiter {value!r} appears in devTime and devTimeFormat; "
                             "use e.g. a tab, ^ or ~")
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: FieldMap) -> FieldMap:
        return check_field_map(value, _RESERVED)


def _leef_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.strftime("%z") or "+0000"
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
            f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}{offset}")


class LeefEncoder(KvEncoder):
    """A `LeefConfig` compiled once."""

    fixed = len(LEEF_FIXED_KEYS)

    def __init__(self, cfg: LeefConfig, implementation: Implementation = COMPILED) -> None:
        header = implementation.escaper(HEADER_ESCAPES).escape
        cap = cfg.max_field_length or UNLIMITED
        delim = cfg.delimiter
        shown = delim if delim.isprintable() and delim != " " else f"x{ord(delim):02X}"
        version = header(cfg.version)

        def prefix(event_vendor: str) -> str:
            names = device(event_vendor, cfg.vendor, cfg.product)
            return "LEEF:2.0|" + "|".join(header(v) for v in names) + f"|{version}|"
        self._time: tuple[datetime, str] = (datetime.min, "")
        specs = [
            Spec("externalId", ("id",), cap, required=True),
            Spec("sev", ("severity_score",), cap, required=True),
            Spec("cat", ("kind",), cap, required=True),
            *field_specs(cfg.fields, lambda _: cap, lambda k: "ip" if k == "src" else None),
        ]
        super().__init__(specs, delim, implementation.escaper(value_escapes(delim)), header,
                         implementation, (prefix, cap, f"|{shown}|"))

    def _fixed_text(self, moment: datetime) -> str:
        if self._time[0] != moment:
            text = f"devTime={_leef_time(moment)}{self.sep}devTimeFormat={LEEF_TIME_FORMAT}"
            self._time = (moment, text)
        return self._time[1]

    def record(self, event: Event) -> KvRecord:
        fixed = (("devTime", _leef_time(event.occurred_at)), ("devTimeFormat", LEEF_TIME_FORMAT))
        return KvRecord(
            prefix=self.head(event), name="", suffix="",
            pairs=(*fixed, *self.pairs(event)), fixed=self.fixed, sep=self.sep,
            escape_name=self.escape_name, escape_value=self.escape_value,
        )

    def encode(self, event: Event) -> str:
        """One LEEF 2.0 record: `LEEF:2.0|Vendor|Product|Version|kind:type|delim|attributes`."""
        return f"{self.head(event)}{self._fixed_text(event.occurred_at)}{self.body(event)}"


leef_encoder = PerConfig(LeefEncoder)
"""The compiled encoder for a `LeefConfig` (cached): for callers that encode many events."""


def encode_leef(event: Event, cfg: LeefConfig) -> str:
    """One LEEF 2.0 record: `LEEF:2.0|Vendor|Product|Version|kind:type|delim|attributes`."""
    return leef_encoder(cfg).encode(event)


def fit_leef(event: Event, cfg: LeefConfig, limit: int, oversize: Oversize) -> list[str]:
    """One event as LEEF records of at most `limit` UTF-8 bytes each."""
    return leef_encoder(cfg).fit(event, limit, oversize)
