"""ArcSight CEF (rev 25): `CEF:0|Vendor|Product|Version|kind:type|Title|Severity|extensions`.

Every escape the format defines is applied, and length limits are enforced on the *unescaped*
UTF-8 value, so a truncation can split neither an escape sequence nor a code point.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import Field, field_validator

from bridge.components import StrictModel
from bridge.model import SEVERITY_SCORE, Event
from bridge.sinks.formats.builders import COMPILED, Check, Implementation, Spec
from bridge.sinks.formats.common import UNLIMITED, KvRecord, Oversize, PerConfig, truncate_utf8
from bridge.sinks.formats.device import device
from bridge.sinks.formats.fields import (
    CANDIDATES,
    CustomField,
    FieldMap,
    check_field_map,
    paths_of,
)
from bridge.sinks.formats.kv import KvEncoder, field_specs
from bridge.version import __version__

# Headers escape backslash and pipe and cannot be multi-line; extension values escape
# backslash, equals and line breaks (as the two-character sequences \n and \r).
HEADER_ESCAPES = (("\\", "\\\\"), ("|", "\\|"), ("\r", " "), ("\n", " "))
VALUE_ESCAPES = (("\\", "\\\\"), ("=", "\\="), ("\n", "\\n"), ("\r", "\\r"))


def _default_fields() -> FieldMap:
    """The standard CEF keys a SIEM correlates on: user, source address, host, URL."""
    return {"msg": "title", "reason": "reason", "src": list(CANDIDATES["ip"]),
            "dhost": list(CANDIDATES["host"]), "duser": list(CANDIDATES["user"]),
            "request": list(CANDIDATES["url"])}


def _default_cs() -> list[CustomField]:
    """What has no standard key goes in labelled custom strings: the AWS account number and
    the cloud region (what cloud SIEM content pivots on), then bridge's own context."""
    return [CustomField(label=label, path=path) for label, path in (
        ("source", "source"), ("tenant", "tenant"), ("vendorSeverity", "vendor_severity"),
        ("status", "status"), ("AWS Account", list(CANDIDATES["account"])),
        ("Cloud Region", list(CANDIDATES["region"])))]


def _default_flex() -> list[CustomField]:
    """The item's identity, in the two labelled flex strings (the rule/test id is the key of
    a compliance test)."""
    return [CustomField(label="itemKey", path="key"),
            CustomField(label="itemUid", path="item_uid")]


def _default_cn() -> list[CustomField]:
    return [CustomField(label="transitionCounter", path="counter")]


CEF_FIXED_KEYS = ("rt", "act", "externalId")
_RESERVED = frozenset(
    {*CEF_FIXED_KEYS, "cat"}
    | {f"cs{i}{s}" for i in range(1, 7) for s in ("", "Label")}
    | {f"cn{i}{s}" for i in range(1, 4) for s in ("", "Label")}
    | {f"flexString{i}{s}" for i in range(1, 3) for s in ("", "Label")}
)


class CefConfig(StrictModel):
    """CEF settings. `rt`, `act` (event type), `externalId` (event id) and `cat` (item kind) are
    always set; `fields` maps further CEF keys (standard or vendor raw fields) to dotted paths,
    a list meaning "the first one that has a value"; `cs`/`cn`/`flex` fill cs1..cs6, cn1..cn3
    and flexString1..2, each with its label. Device Vendor/Product default to the event's
    vendor (`bridge.sinks.formats.device`); set them to name one device for every event."""

    vendor: str | None = Field(default=None, min_length=1)
    product: str | None = Field(default=None, min_length=1)
    version: str = Field(default=__version__, min_length=1)
    fields: FieldMap = Field(default_factory=_default_fields)
    cs: list[CustomField] = Field(default_factory=_default_cs, max_length=6)
    cn: list[CustomField] = Field(default_factory=_default_cn, max_length=3)
    flex: list[CustomField] = Field(default_factory=_default_flex, max_length=2)
    # A cap (UTF-8 bytes) on every value, on top of the per-key limits of the CEF spec.
    max_field_length: int | None = Field(default=None, ge=16)

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: FieldMap) -> FieldMap:
        return check_field_map(value, _RESERVED)


_LIMITS: Mapping[str, int] = {
    "act": 63, "app": 31, "proto": 31, "outcome": 63, "externalId": 40, "dvchost": 100,
    "fileHash": 255, "deviceExternalId": 255, "deviceDnsDomain": 255, "dntdom": 255,
    "sntdom": 255, "flexString1Label": 128, "flexString2Label": 128,
    "flexString1": 1023, "flexString2": 1023,
    **{f"cs{i}": 4000 for i in range(1, 7)},
}
_DEFAULT_LIMIT = 1023  # cat, msg, reason, dhost, duser, shost, suser, request, labels...
_IP_KEYS = frozenset({"src", "dst", "dvc", "sourceTranslatedAddress",
                      "destinationTranslatedAddress", "deviceTranslatedAddress"})
_INT_KEYS = frozenset({"cn1", "cn2", "cn3", "spt", "dpt", "cnt", "in", "out", "fsize", "spid",
                       "dpid", "oldFileSize"})


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class CefEncoder(KvEncoder):
    """A `CefConfig` compiled once."""

    fixed = len(CEF_FIXED_KEYS)

    def __init__(self, cfg: CefConfig, implementation: Implementation = COMPILED) -> None:
        header = implementation.escaper(HEADER_ESCAPES).escape
        cap = cfg.max_field_length or UNLIMITED
        version = header(truncate_utf8(cfg.version, min(31, cap)))

        def prefix(event_vendor: str) -> str:
            names = device(event_vendor, cfg.vendor, cfg.product)
            return "CEF:0|" + "|".join(header(truncate_utf8(v, min(63, cap))) for v in names) \
                + f"|{version}|"
        self._name_limit = min(512, cap)
        self._rt: tuple[datetime, str] = (datetime.min, "")

        def limit(key: str) -> int:
            return min(_LIMITS.get(key, _DEFAULT_LIMIT), cap)

        def check(key: str) -> Check | None:
            return "ip" if key in _IP_KEYS else "int" if key in _INT_KEYS else None

        specs = [
            Spec("act", ("type",), limit("act"), required=True),
            Spec("externalId", ("id",), limit("externalId"), required=True),
            Spec("cat", ("kind",), limit("cat"), required=True),
            *field_specs(cfg.fields, limit, check),
        ]
        for kind, customs in (("cs", cfg.cs), ("cn", cfg.cn), ("flexString", cfg.flex)):
            for i, custom in enumerate(customs, start=1):
                key = f"{kind}{i}"
                label = (f"{key}Label", truncate_utf8(custom.label, limit(f"{key}Label")))
                specs.append(Spec(key, paths_of(custom.path), limit(key), check(key), label))
        super().__init__(specs, " ", implementation.escaper(VALUE_ESCAPES), header,
                         implementation, (prefix, min(1023, cap), "|"))

    def _rt_text(self, moment: datetime) -> str:
        if self._rt[0] != moment:
            self._rt = (moment, str(_ms(moment)))
        return self._rt[1]

    def _name(self, event: Event) -> str:
        name = event.title
        return truncate_utf8(name, self._name_limit) if len(name) * 4 > self._name_limit else name

    def record(self, event: Event) -> KvRecord:
        return KvRecord(
            prefix=self.head(event), name=self._name(event),
            suffix=f"|{event.severity_score}|",
            pairs=(("rt", self._rt_text(event.occurred_at)), *self.pairs(event)),
            fixed=self.fixed, sep=self.sep, escape_name=self.escape_name,
            escape_value=self.escape_value,
        )

    def encode(self, event: Event) -> str:
        """One CEF record: `CEF:0|Vendor|Product|Version|kind:type|Title|Severity|extensions`."""
        return (f"{self.head(event)}{self.escape_name(self._name(event))}|"
                f"{SEVERITY_SCORE[event.severity]}|rt={self._rt_text(event.occurred_at)}"
                f"{self.body(event)}")


cef_encoder = PerConfig(CefEncoder)
"""The compiled encoder for a `CefConfig` (cached): for callers that encode many events."""


def encode_cef(event: Event, cfg: CefConfig) -> str:
    """One CEF record: `CEF:0|Vendor|Product|Version|kind:type|Title|Severity|extensions`."""
    return cef_encoder(cfg).encode(event)


def fit_cef(event: Event, cfg: CefConfig, limit: int, oversize: Oversize) -> list[str]:
    """One event as CEF records of at most `limit` UTF-8 bytes each."""
    return cef_encoder(cfg).fit(event, limit, oversize)
