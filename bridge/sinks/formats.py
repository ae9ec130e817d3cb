"""Pure encoders, `Event` -> text: ArcSight CEF (rev 25), QRadar LEEF 2.0 and JSON.

They are sink-agnostic (syslog, webhook and file sinks share them) and exact: every escape a
format defines is applied, and length limits are enforced on the *unescaped* UTF-8 value, so a
truncation can split neither an escape sequence nor a code point. Limits count UTF-8 bytes, which
satisfies receivers that count characters too. Nothing here does I/O.

Every encoder's output is one line for any receiver and inert on a terminal: control,
line-breaking and bidi characters, for which no format defines an escape, are written as
visible escapes (`\\x1b`, `\\u2028`; `\\u0085` inside JSON strings), see `bridge.textsafe`.

`fit_cef`/`fit_leef`/`fit_json` re-encode one event under a byte budget (a UDP datagram) by
truncating the longest values or by splitting the event over several messages.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator

from bridge.components import StrictModel
from bridge.model import SEVERITY_SCORE, Event
from bridge.textsafe import UNSAFE_EXCEPT_TAB_LF_CR, visible_match
from bridge.version import __version__

Getter = Callable[[Event], Any]
Oversize = Literal["truncate", "split"]

# Event attributes a dotted path may start with; `attributes.x`, `raw.a.b` and `changes.f` reach
# into the mappings.
EVENT_FIELDS = frozenset({
    "id", "type", "source", "vendor", "scope", "kind", "key", "title", "severity",
    "severity_score", "occurred_at", "counter", "vendor_severity", "status", "tenant", "reason",
    "item_uid",
})
KEY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
# In split mode every part carries `bridgePart=i/n` so a receiver can reassemble the event.
PART_KEY = "bridgePart"


class FitError(ValueError):
    """The event cannot be made to fit the byte budget (the budget is smaller than its header)."""


# --- values -------------------------------------------------------------------------------------

def _dig(data: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        if isinstance(data, Mapping):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def compile_path(path: str) -> Getter:
    """`title`, `attributes.region`, `raw.resource.arn`, `changes.severity` -> a getter."""
    head, _, rest = path.partition(".")
    if head == "attributes" and rest:
        return lambda e: e.attributes.get(rest)
    if head == "raw" and rest:
        parts = rest.split(".")
        return lambda e: _dig(e.raw, parts)
    if head == "changes" and rest:
        return lambda e: list(e.changes[rest]) if rest in e.changes else None
    if head in EVENT_FIELDS and not rest:
        if head == "type":
            return lambda e: e.type.value
        return lambda e: getattr(e, head)
    raise ValueError(
        f"unknown field path {path!r}: use an event field ({', '.join(sorted(EVENT_FIELDS))}), "
        "attributes.<name>, raw.<a.b.c> or changes.<field>"
    )


def as_text(value: Any) -> str | None:
    """A field value as the text formats carry; None/"" mean "leave the key out"."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits `max_bytes` (whole code points)."""
    if len(text) * 4 <= max_bytes:
        return text
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _visible_on_wire(text: str) -> str:
    """Control, line-breaking and bidi characters as visible escapes (`\\x1b`, `\\u2028`).

    No format defines an escape for them, yet raw they let a vendor's text forge a second
    event for a receiver that splits on VT/FF/FS/GS/RS/NEL/U+2028 (Python's `splitlines`),
    truncate the message at a NUL in a C-string receiver, or drive the analyst's terminal. The
    formats escape their backslashes before this runs, so `\\x1b` stays unambiguous; a parser
    that does not know the escape shows it as the harmless text it is."""
    return UNSAFE_EXCEPT_TAB_LF_CR.pattern.sub(visible_match, text)


# `UNSAFE_EXCEPT_TAB_LF_CR.found_in`, inlined into the compiled escapers below (they run on
# every value): false positives (non-ASCII text that is not printable for another reason) only
# cost a no-op substitution.
_UNSAFE_TEST = "((0 in t.encode().translate(_F)) if t.isascii() else not t.isprintable())"


class Escaper:
    """Per-character escaping, compiled to one C-speed `in` test per special character since
    values are mostly plain; `needs(text)` says whether any character needs escaping. After the
    format's own escapes, every control character left becomes visible (`_visible_on_wire`),
    behind a C-speed guard (`bridge.textsafe.Unsafe.found_in`) that plain text passes."""

    __slots__ = ("escape", "needs")

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        tests = " or ".join(f"{c!r} in t" for c, _ in pairs)
        steps = "".join(f"    if {c!r} in t: t = t.replace({c!r}, {r!r})\n" for c, r in pairs)
        namespace: dict[str, Any] = {"_visible": _visible_on_wire,
                                     "_F": UNSAFE_EXCEPT_TAB_LF_CR.ascii_flags}
        exec(f"def needs(t):\n    return {tests} or {_UNSAFE_TEST}\n"
             f"def escape(t):\n{steps}    if {_UNSAFE_TEST}: t = _visible(t)\n"
             "    return t\n", namespace)
        self.escape: Callable[[str], str] = namespace["escape"]
        self.needs: Callable[[str], bool] = namespace["needs"]


# CEF: headers escape backslash and pipe and cannot be multi-line; extension values escape
# backslash, equals and line breaks (as the two-character sequences \n and \r).
CEF_HEADER = Escaper((("\\", "\\\\"), ("|", "\\|"), ("\r", " "), ("\n", " ")))
CEF_VALUE = Escaper((("\\", "\\\\"), ("=", "\\="), ("\n", "\\n"), ("\r", "\\r")))
cef_header_escape = CEF_HEADER.escape
cef_value_escape = CEF_VALUE.escape
# LEEF defines no value escaping; ours keeps every value on one line and never lets the
# delimiter appear inside one (it becomes \xHH), so even a naive splitting parser stays aligned.
leef_header_escape = cef_header_escape


def leef_value_escaper(delimiter: str) -> Escaper:
    pairs = [("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")]
    if delimiter != "\t":
        pairs.append((delimiter, f"\\x{ord(delimiter):02x}"))
    return Escaper(pairs)


# --- configuration ------------------------------------------------------------------------------

FieldMap = dict[str, str | list[str]]


class CustomField(StrictModel):
    """A CEF custom field (`cs1`/`cs1Label`...): what it means and where its value comes from."""

    label: str = Field(min_length=1, max_length=1023)
    path: str

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        compile_path(value)
        return value


def _check_field_map(fields: FieldMap, reserved: frozenset[str]) -> FieldMap:
    for key, paths in fields.items():
        if not KEY_PATTERN.match(key):
            raise ValueError(f"field key {key!r} must be letters, digits and _ (starting a letter)")
        if key in reserved or key == PART_KEY:
            raise ValueError(f"field key {key!r} is set by the encoder itself")
        for path in [paths] if isinstance(paths, str) else paths:
            compile_path(path)
    return fields


_CANDIDATES: dict[str, list[str]] = {
    "ip": ["attributes.ip", "attributes.ip_address"],
    "host": ["attributes.host", "attributes.resource_name"],
    "user": ["attributes.user", "attributes.user_principal_name"],
}


def _default_cef_fields() -> FieldMap:
    return {"msg": "title", "reason": "reason", "src": _CANDIDATES["ip"],
            "dhost": _CANDIDATES["host"], "duser": _CANDIDATES["user"]}


def _default_cs() -> list[CustomField]:
    return [CustomField(label=label, path=path) for label, path in (
        ("source", "source"), ("tenant", "tenant"), ("vendorSeverity", "vendor_severity"),
        ("status", "status"), ("itemKey", "key"), ("itemUid", "item_uid"))]


def _default_cn() -> list[CustomField]:
    return [CustomField(label="transitionCounter", path="counter")]


CEF_FIXED_KEYS = ("rt", "act", "externalId")
_CEF_RESERVED = frozenset(
    {*CEF_FIXED_KEYS, "cat"}
    | {f"cs{i}{s}" for i in range(1, 7) for s in ("", "Label")}
    | {f"cn{i}{s}" for i in range(1, 4) for s in ("", "Label")}
)


class CefConfig(StrictModel):
    """CEF settings. `rt`, `act` (event type), `externalId` (event id) and `cat` (item kind) are
    always set; `fields` maps further CEF keys (standard or vendor raw fields) to dotted paths,
    a list meaning "the first one that has a value"; `cs`/`cn` fill cs1..cs6 and cn1..cn3."""

    vendor: str = Field(default="bridge", min_length=1)
    product: str = Field(default="bridge", min_length=1)
    version: str = Field(default=__version__, min_length=1)
    fields: FieldMap = Field(default_factory=_default_cef_fields)
    cs: list[CustomField] = Field(default_factory=_default_cs, max_length=6)
    cn: list[CustomField] = Field(default_factory=_default_cn, max_length=3)
    # A cap (UTF-8 bytes) on every value, on top of the per-key limits of the CEF spec.
    max_field_length: int | None = Field(default=None, ge=16)

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: FieldMap) -> FieldMap:
        return _check_field_map(value, _CEF_RESERVED)


LEEF_FIXED_KEYS = ("devTime", "devTimeFormat", "externalId")
_LEEF_RESERVED = frozenset({*LEEF_FIXED_KEYS, "sev", "cat"})
LEEF_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSZ"


def _default_leef_fields() -> FieldMap:
    return {
        "eventType": "type", "source": "source", "vendor": "vendor", "tenant": "tenant",
        "itemKey": "key", "itemUid": "item_uid", "title": "title",
        "vendorSeverity": "vendor_severity", "status": "status", "reason": "reason",
        "counter": "counter", "src": _CANDIDATES["ip"], "identHostName": _CANDIDATES["host"],
        "usrName": _CANDIDATES["user"],
    }


class LeefConfig(StrictModel):
    """LEEF 2.0 settings. `devTime`/`devTimeFormat`, `externalId` (event id), `sev` (1-10) and
    `cat` (item kind) are always set; `fields` maps further attributes to dotted paths."""

    vendor: str = Field(default="bridge", min_length=1)
    product: str = Field(default="bridge", min_length=1)
    version: str = Field(default=__version__, min_length=1)
    # One character, or its hex form (`x09`, `0x5E`) as the LEEF header itself allows.
    delimiter: str = "\t"
    fields: FieldMap = Field(default_factory=_default_leef_fields)
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
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: FieldMap) -> FieldMap:
        return _check_field_map(value, _LEEF_RESERVED)


# --- key=value records (CEF and LEEF) -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KvRecord:
    """A CEF/LEEF event before rendering: what fitting shrinks or splits.

    `name` is the one header value that may shrink (CEF's Name; empty for LEEF); the first
    `fixed` pairs identify the event, are repeated in every split part and never shrink.
    Values are unescaped and already within their per-key limits.
    """

    prefix: str
    name: str
    suffix: str
    pairs: tuple[tuple[str, str], ...]
    fixed: int
    sep: str
    escape_name: Callable[[str], str]
    escape_value: Callable[[str], str]

    def render(self) -> str:
        esc = self.escape_value
        body = self.sep.join([f"{k}={esc(v)}" for k, v in self.pairs])
        return f"{self.prefix}{self.escape_name(self.name)}{self.suffix}{body}"


_CEF_LIMITS: Mapping[str, int] = {
    "act": 63, "app": 31, "proto": 31, "outcome": 63, "externalId": 40, "dvchost": 100,
    "fileHash": 255, "deviceExternalId": 255, "deviceDnsDomain": 255, "dntdom": 255,
    "sntdom": 255, "flexString1Label": 128, "flexString2Label": 128,
    **{f"cs{i}": 4000 for i in range(1, 7)},
}
_CEF_DEFAULT_LIMIT = 1023  # cat, msg, reason, dhost, duser, shost, suser, request, labels...
_CEF_IP_KEYS = frozenset({"src", "dst", "dvc", "sourceTranslatedAddress",
                          "destinationTranslatedAddress", "deviceTranslatedAddress"})
_CEF_INT_KEYS = frozenset({"cn1", "cn2", "cn3", "spt", "dpt", "cnt", "in", "out", "fsize",
                           "spid", "dpid", "oldFileSize"})
UNLIMITED = 1 << 30
_IPV4 = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}",
                   re.ASCII)
_INT = re.compile(r"-?\d{1,18}", re.ASCII)  # CEF's Long, in ASCII digits only


def _valid_ip(text: str) -> bool:
    if _IPV4.fullmatch(text):
        return True
    if ":" not in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _valid_int(text: str) -> bool:
    return _INT.fullmatch(text) is not None


def _change(event: Event, name: str) -> Any:
    pair = event.changes.get(name)
    return None if pair is None else list(pair)


# --- compiled field builders --------------------------------------------------------------------
# The sink encodes every event of every batch, so each config is compiled once into straight-line
# functions (the technique dataclasses use) that read exactly the configured fields with no
# per-field dispatch. `text` returns [prefix, value, prefix, value...], each prefix being the
# separator and `key=` with any constant label pair folded in (escaped once, at compile time):
# when no value holds a character to escape, the common case, the body is a single join.
# `pairs` returns (key, value) tuples for the fitting path.

TextBuilder = Callable[[Event], list[str]]
PairBuilder = Callable[[Event], list[tuple[str, str]]]
# Event fields that always hold a str, so the generated code needs no conversion.
_STR_FIELDS = frozenset({"id", "source", "vendor", "scope", "kind", "key", "title", "severity",
                         "vendor_severity", "status", "tenant", "reason", "item_uid"})
_INT_FIELDS = frozenset({"counter", "severity_score"})


@dataclass(frozen=True, slots=True)
class _Spec:
    key: str
    paths: tuple[str, ...] = ()
    limit: int = UNLIMITED
    check: Literal["ip", "int"] | None = None
    label: tuple[str, str] | None = None  # (label key, label) emitted before the value
    required: bool = False  # emitted even when empty (identifiers)


def _expression(path: str, as_pairs: bool) -> tuple[str, bool]:
    """Python source reading `path` from event `e` (attributes bound to `a`); and if it is str."""
    compile_path(path)  # validates
    head, _, rest = path.partition(".")
    if head == "attributes":
        return f"a.get({rest!r})", False
    if head == "raw":
        return f"_dig(e.raw, {tuple(rest.split('.'))!r})", False
    if head == "changes":
        return f"_change(e, {rest!r})", False
    if head == "type":  # a StrEnum: text joins it as its value, records want the plain str
        return ("e.type.value" if as_pairs else "e.type"), True
    if head in _INT_FIELDS:
        return f"str(e.{head})", True
    return f"e.{head}", head in _STR_FIELDS


def _builder(specs: Sequence[_Spec], sep: str, escape: Callable[[str], str] | None) -> Any:
    """`text` builder with `escape` for the constant labels, or the `pairs` one (None)."""
    lines = ["def build(e):", "    a = e.attributes", "    L = []", "    ap = L.append"]
    for spec in specs:
        exprs = [_expression(p, escape is None) for p in spec.paths]
        if escape is None:
            keep = f"ap(({spec.key!r}, v))"
            if spec.label is not None:
                keep = f"ap({spec.label!r}); {keep}"
        else:
            label = f"{spec.label[0]}={escape(spec.label[1])}{sep}" if spec.label else ""
            keep = f"ap({sep + label + spec.key + '='!r}); ap(v)"
        lines.append(f"    v = {exprs[0][0]}")
        for expr, _ in exprs[1:]:
            lines.append(f"    if v is None or v == '': v = {expr}")
        if not (len(exprs) == 1 and exprs[0][1]):
            lines.append("    if v.__class__ is not str: v = _text(v)")
        indent = "    "
        if not spec.required:
            lines.append("    if v:")
            indent = "        "
        elif not exprs[0][1] or len(exprs) > 1:
            lines.append("    if v is None: v = ''")
        if spec.limit < UNLIMITED:  # only a long value, or a non-ASCII one, can be too long
            lines.append(f"{indent}if len(v) > {spec.limit // 4} and (len(v) > {spec.limit} or "
                         f"not v.isascii()): v = _trunc(v, {spec.limit})")
        known_int = spec.check == "int" and all(p in _INT_FIELDS for p in spec.paths)
        if spec.check is not None and not known_int:
            lines.append(f"{indent}if _valid_{spec.check}(v): {keep}")
        else:
            lines.append(f"{indent}{keep}")
    lines.append("    return L")
    source = "\n".join(lines)
    namespace: dict[str, Any] = {"_dig": _dig, "_change": _change, "_text": as_text,
                                 "_trunc": truncate_utf8, "_valid_ip": _valid_ip,
                                 "_valid_int": _valid_int}
    exec(compile(source, "<bridge.sinks.formats builder>", "exec"), namespace)
    return namespace["build"], source


def _field_specs(fields: FieldMap, limit: Callable[[str], int],
                 check: Callable[[str], Literal["ip", "int"] | None]) -> list[_Spec]:
    return [_Spec(key, (paths,) if isinstance(paths, str) else tuple(paths), limit(key),
                  check(key)) for key, paths in fields.items()]


class _KvEncoder:
    """Shared by CEF and LEEF: compiled builders plus the format's escaping and separator."""

    fixed: int

    def __init__(self, specs: Sequence[_Spec], sep: str, escape_value: Escaper,
                 escape_name: Callable[[str], str]) -> None:
        self._text: TextBuilder
        self._pairs: PairBuilder
        self._text, self.source = _builder(specs, sep, escape_value.escape)
        self._pairs, _ = _builder(specs, sep, None)
        self._needs_escape = escape_value.needs
        self.sep = sep
        self.escape_value = escape_value.escape
        self.escape_name = escape_name

    def body(self, event: Event) -> str:
        """`SEP key=value...` for the built fields, escaped (note the leading separator)."""
        items = self._text(event)
        values = items[1::2]
        if self._needs_escape("".join(values)):
            items[1::2] = [self.escape_value(v) for v in values]
        return "".join(items)

    def pairs(self, event: Event) -> list[tuple[str, str]]:
        return self._pairs(event)


class CefEncoder(_KvEncoder):
    """A `CefConfig` compiled once."""

    fixed = len(CEF_FIXED_KEYS)

    def __init__(self, cfg: CefConfig) -> None:
        cap = cfg.max_field_length or UNLIMITED
        self._prefix = "CEF:0|" + "|".join(
            cef_header_escape(truncate_utf8(value, min(limit, cap)))
            for value, limit in ((cfg.vendor, 63), (cfg.product, 63), (cfg.version, 31))
        ) + "|"
        self._name_limit = min(512, cap)
        self._sig_limit = min(1023, cap)
        self._signatures: dict[tuple[str, str], str] = {}
        self._rt: tuple[datetime, str] = (datetime.min, "")

        def limit(key: str) -> int:
            return min(_CEF_LIMITS.get(key, _CEF_DEFAULT_LIMIT), cap)

        def check(key: str) -> Literal["ip", "int"] | None:
            return "ip" if key in _CEF_IP_KEYS else "int" if key in _CEF_INT_KEYS else None

        specs = [
            _Spec("act", ("type",), limit("act"), required=True),
            _Spec("externalId", ("id",), limit("externalId"), required=True),
            _Spec("cat", ("kind",), limit("cat"), required=True),
            *_field_specs(cfg.fields, limit, check),
        ]
        for kind, customs in (("cs", cfg.cs), ("cn", cfg.cn)):
            for i, custom in enumerate(customs, start=1):
                key = f"{kind}{i}"
                label = (f"{key}Label", truncate_utf8(custom.label, limit(f"{key}Label")))
                specs.append(_Spec(key, (custom.path,), limit(key), check(key), label))
        super().__init__(specs, " ", CEF_VALUE, cef_header_escape)

    def _rt_text(self, moment: datetime) -> str:
        if self._rt[0] != moment:
            self._rt = (moment, str(_ms(moment)))
        return self._rt[1]

    def _prefix_for(self, event: Event) -> str:
        """The header up to the Name: constant per (kind, type), so cached."""
        kind, etype = event.kind, event.type
        cached = self._signatures.get((kind, etype))
        if cached is None:
            if len(self._signatures) > 1024:
                self._signatures.clear()
            signature = cef_header_escape(truncate_utf8(f"{kind}:{etype}", self._sig_limit))
            cached = self._signatures[(kind, etype)] = f"{self._prefix}{signature}|"
        return cached

    def _name(self, event: Event) -> str:
        name = event.title
        return truncate_utf8(name, self._name_limit) if len(name) * 4 > self._name_limit else name

    def record(self, event: Event) -> KvRecord:
        return KvRecord(
            prefix=self._prefix_for(event), name=self._name(event),
            suffix=f"|{event.severity_score}|",
            pairs=(("rt", self._rt_text(event.occurred_at)), *self.pairs(event)),
            fixed=self.fixed, sep=self.sep, escape_name=self.escape_name,
            escape_value=self.escape_value,
        )

    def encode(self, event: Event) -> str:
        return (f"{self._prefix_for(event)}{cef_header_escape(self._name(event))}|"
                f"{SEVERITY_SCORE[event.severity]}|rt={self._rt_text(event.occurred_at)}"
                f"{self.body(event)}")


def _leef_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.strftime("%z") or "+0000"
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
            f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}{offset}")


class LeefEncoder(_KvEncoder):
    """A `LeefConfig` compiled once."""

    fixed = len(LEEF_FIXED_KEYS)

    def __init__(self, cfg: LeefConfig) -> None:
        cap = cfg.max_field_length or UNLIMITED
        self._cap = cap
        delim = cfg.delimiter
        shown = delim if delim.isprintable() and delim != " " else f"x{ord(delim):02X}"
        self._head = "LEEF:2.0|" + "|".join(
            leef_header_escape(v) for v in (cfg.vendor, cfg.product, cfg.version)) + "|"
        self._suffix = f"|{shown}|"
        self._time: tuple[datetime, str] = (datetime.min, "")
        self._event_ids: dict[tuple[str, str], str] = {}
        specs = [
            _Spec("externalId", ("id",), cap, required=True),
            _Spec("sev", ("severity_score",), cap, required=True),
            _Spec("cat", ("kind",), cap, required=True),
            *_field_specs(cfg.fields, lambda _: cap, lambda k: "ip" if k == "src" else None),
        ]
        super().__init__(specs, delim, leef_value_escaper(delim), leef_header_escape)

    def _prefix_for(self, event: Event) -> str:
        kind, etype = event.kind, event.type
        cached = self._event_ids.get((kind, etype))
        if cached is None:
            if len(self._event_ids) > 1024:
                self._event_ids.clear()
            event_id = leef_header_escape(truncate_utf8(f"{kind}:{etype}", self._cap))
            cached = self._event_ids[(kind, etype)] = f"{self._head}{event_id}{self._suffix}"
        return cached

    def _fixed_text(self, moment: datetime) -> str:
        if self._time[0] != moment:
            text = f"devTime={_leef_time(moment)}{self.sep}devTimeFormat={LEEF_TIME_FORMAT}"
            self._time = (moment, text)
        return self._time[1]

    def record(self, event: Event) -> KvRecord:
        fixed = (("devTime", _leef_time(event.occurred_at)), ("devTimeFormat", LEEF_TIME_FORMAT))
        return KvRecord(
            prefix=self._prefix_for(event), name="", suffix="",
            pairs=(*fixed, *self.pairs(event)), fixed=self.fixed, sep=self.sep,
            escape_name=self.escape_name, escape_value=self.escape_value,
        )

    def encode(self, event: Event) -> str:
        return f"{self._prefix_for(event)}{self._fixed_text(event.occurred_at)}{self.body(event)}"


# Compiled encoders are cached per config object (configs are frozen); the config is kept in the
# cache entry so its id cannot be reused while the entry lives.
_compiled: dict[int, tuple[object, Any]] = {}


def _encoder_for(cfg: CefConfig | LeefConfig) -> Any:
    hit = _compiled.get(id(cfg))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    if len(_compiled) >= 64:
        _compiled.clear()
    encoder = CefEncoder(cfg) if isinstance(cfg, CefConfig) else LeefEncoder(cfg)
    _compiled[id(cfg)] = (cfg, encoder)
    return encoder


def cef_encoder(cfg: CefConfig) -> CefEncoder:
    """The compiled encoder for `cfg` (cached): for callers that encode many events."""
    encoder: CefEncoder = _encoder_for(cfg)
    return encoder


def leef_encoder(cfg: LeefConfig) -> LeefEncoder:
    encoder: LeefEncoder = _encoder_for(cfg)
    return encoder


def encode_cef(event: Event, cfg: CefConfig) -> str:
    """One CEF record: `CEF:0|Vendor|Product|Version|kind:type|Title|Severity|extensions`."""
    encoder: CefEncoder = _encoder_for(cfg)
    return encoder.encode(event)


def encode_leef(event: Event, cfg: LeefConfig) -> str:
    """One LEEF 2.0 record: `LEEF:2.0|Vendor|Product|Version|kind:type|delim|attributes`."""
    encoder: LeefEncoder = _encoder_for(cfg)
    return encoder.encode(event)


def _json_unicode_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_safe(text: str) -> str:
    """Compact JSON from orjson with the characters it leaves raw escaped as `\\uXXXX`.

    orjson escapes C0 controls but not DEL, C1 controls (NEL U+0085), U+2028/U+2029 or bidi
    controls: valid JSON, yet `splitlines()`-style receivers break a line on some of them and
    terminals act on others. Such characters can only sit inside JSON strings, where `\\uXXXX`
    means the same character, so the decoded value is unchanged.

    orjson escapes every C0 control (RFC 8259 requires it) and writes no whitespace, so ASCII
    output can only hold DEL: one C-speed `in` settles the common case."""
    if text.isascii() and "\x7f" not in text:
        return text
    return UNSAFE_EXCEPT_TAB_LF_CR.escape(text, _json_unicode_escape)


def encode_json(event: Event) -> str:
    """`Event.to_dict()` as one compact line: `Event.to_json()`, the outbox's own form, with
    every control, line-breaking and bidi character escaped (`json_safe`), so never a line
    break for any receiver and the same object once decoded."""
    return json_safe(event.to_json())


# --- fitting under a byte budget ----------------------------------------------------------------

def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def cut_escaped(value: str, escape: Callable[[str], str], max_bytes: int) -> str:
    """The longest prefix of `value` whose escaped UTF-8 form fits `max_bytes`."""
    if _size(escape(value)) <= max_bytes:
        return value
    lo, hi = 0, len(value)  # escaping is per character, so cost grows with the prefix
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _size(escape(value[:mid])) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return value[:lo]


def _water_level(costs: Sequence[int], budget: int) -> int:
    """The largest cap C with sum(min(c, C)) <= budget: shrink the longest values first."""
    lo, hi = 0, max(costs, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(c, mid) for c in costs) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _fit_kv_truncate(rec: KvRecord, limit: int) -> list[str]:
    fixed, loose = rec.pairs[: rec.fixed], rec.pairs[rec.fixed:]
    esc = rec.escape_value
    costs = [_size(rec.escape_name(rec.name))] + [_size(esc(v)) for _, v in loose]
    overhead = _size(rec.render()) - sum(costs)
    if overhead > limit:
        raise FitError(f"{overhead} bytes of header and identifiers exceed the {limit} byte limit")
    cap = _water_level(costs, limit - overhead)
    name = cut_escaped(rec.name, rec.escape_name, cap)
    pairs = fixed + tuple((k, cut_escaped(v, esc, cap)) for k, v in loose)
    return [replace(rec, name=name, pairs=pairs).render()]


def _fit_kv_split(rec: KvRecord, limit: int) -> list[str]:
    esc, sep = rec.escape_value, rec.sep
    fixed, loose = rec.pairs[: rec.fixed], rec.pairs[rec.fixed:]
    marker_room = len(sep) + len(PART_KEY) + len("=9999/9999")
    base = replace(rec, pairs=fixed)
    room = limit - _size(base.render()) - marker_room
    min_room = 128
    if room < min_room:  # shrink the name so that parts carry at least some payload
        name_cost = _size(rec.escape_name(rec.name))
        name = cut_escaped(rec.name, rec.escape_name, max(0, name_cost - (min_room - room)))
        base = replace(base, name=name)
        room = limit - _size(base.render()) - marker_room
        if room < min_room:
            raise FitError(f"header and identifiers leave no room in a {limit} byte message")
    parts: list[list[tuple[str, str]]] = [[]]
    used = 0
    for key, value in loose:
        cost = len(sep) + _size(key) + 1 + _size(esc(value))
        if used + cost > room and cost <= room and parts[-1]:
            parts.append([])
            used = 0
        if used + cost <= room:
            parts[-1].append((key, value))
            used += cost
            continue
        while value:  # longer than a whole message: continue it under the same key
            avail = room - used - len(sep) - _size(key) - 1
            chunk = cut_escaped(value, esc, avail) if avail > 0 else ""
            if not chunk:
                if not parts[-1]:
                    raise FitError(f"key {key!r} leaves no room in a {limit} byte message")
                parts.append([])
                used = 0
                continue
            parts[-1].append((key, chunk))
            used += len(sep) + _size(key) + 1 + _size(esc(chunk))
            value = value[len(chunk):]
    if len(parts) > 9999:
        raise FitError("event would need more than 9999 messages")
    total = len(parts)
    return [
        replace(base, pairs=(*fixed, (PART_KEY, f"{i}/{total}"), *part)).render()
        for i, part in enumerate(parts, start=1)
    ]


def fit_kv(rec: KvRecord, limit: int, oversize: Oversize) -> list[str]:
    """Render `rec` in messages of at most `limit` UTF-8 bytes each."""
    text = rec.render()
    if _size(text) <= limit:
        return [text]
    return _fit_kv_split(rec, limit) if oversize == "split" else _fit_kv_truncate(rec, limit)


def fit_cef(event: Event, cfg: CefConfig, limit: int, oversize: Oversize) -> list[str]:
    encoder: CefEncoder = _encoder_for(cfg)
    return fit_kv(encoder.record(event), limit, oversize)


def fit_leef(event: Event, cfg: LeefConfig, limit: int, oversize: Oversize) -> list[str]:
    encoder: LeefEncoder = _encoder_for(cfg)
    return fit_kv(encoder.record(event), limit, oversize)


# JSON keeps its shape: truncation shortens the longest strings anywhere in the object except
# the few fields that identify the event; split puts top-level keys in several objects carrying
# `id` and `part`/`parts`, shortening strings only of a key too large for a message of its own.
JSON_FIXED_KEYS = frozenset({"id", "type", "item_uid", "severity", "severity_score", "counter",
                             "occurred_at"})


def _dumps(value: Any) -> str:
    return json_safe(orjson.dumps(value, default=str).decode())


def _json_escape(text: str) -> str:
    return _dumps(text)[1:-1]


def _string_leaves(value: Any, out: list[tuple[Any, Any, str]]) -> None:
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for k, v in items:
        if isinstance(v, str):
            out.append((value, k, v))
        elif isinstance(v, dict | list):
            _string_leaves(v, out)


def _shrink_json(data: dict[str, Any], keys: Sequence[str], limit: int) -> dict[str, Any]:
    """Shorten the longest strings under `keys` until `_dumps(data)` fits `limit` bytes."""
    data = orjson.loads(_dumps(data))  # a private deep copy, with `default=str` applied
    leaves: list[tuple[Any, Any, str]] = []
    for key in keys:
        value = data[key]
        if isinstance(value, str):
            leaves.append((data, key, value))
        elif isinstance(value, dict | list):
            _string_leaves(value, leaves)
    costs = [_size(_json_escape(s)) for _, _, s in leaves]
    overhead = _size(_dumps(data)) - sum(costs)
    if overhead > limit:
        raise FitError(f"the JSON structure alone needs {overhead} bytes, over the {limit} limit")
    cap = _water_level(costs, limit - overhead)
    for (container, key, text), cost in zip(leaves, costs, strict=True):
        if cost > cap:
            container[key] = cut_escaped(text, _json_escape, cap)
    return data


def fit_json(event: Event, limit: int, oversize: Oversize) -> list[str]:
    text = encode_json(event)
    if _size(text) <= limit:
        return [text]
    data = event.to_dict()
    loose = [k for k in data if k not in JSON_FIXED_KEYS]
    if oversize == "truncate":
        return [_dumps(_shrink_json(data, loose, limit))]
    base = {"id": data["id"], "part": 9999, "parts": 9999}
    room = limit - _size(_dumps(base)) - 1  # the comma before the first key
    if room < 16:
        raise FitError(f"a {limit} byte message cannot carry a JSON part")
    parts: list[dict[str, Any]] = [{}]
    used = 0
    for key in [k for k in data if k != "id"]:
        member = {key: data[key]}
        cost = _size(_dumps(member)) - 1  # `"key":value,` without braces plus its comma
        if cost > room:
            if key in JSON_FIXED_KEYS:
                raise FitError(f"identifier {key!r} alone exceeds a {limit} byte message")
            member = _shrink_json(member, [key], room + 1)
            cost = _size(_dumps(member)) - 1
        if used + cost > room and parts[-1]:
            parts.append({})
            used = 0
        parts[-1].update(member)
        used += cost
    total = len(parts)
    return [_dumps({"id": data["id"], "part": i, "parts": total, **part})
            for i, part in enumerate(parts, start=1)]
