"""Pure encoders, `Event` -> text: ArcSight CEF (rev 25), QRadar LEEF 2.0 and JSON.

They are sink-agnostic (any sink picks one with `payload.formatter`) and exact: every escape a
format defines is applied, and length limits are enforced on the *unescaped* UTF-8 value, so a
truncation can split neither an escape sequence nor a code point. Limits count UTF-8 bytes,
which satisfies receivers that count characters too. Nothing here does I/O.

Every encoder's output is one line for any receiver and inert on a terminal: control,
line-breaking and bidi characters, for which no format defines an escape, are written as
visible escapes (`\\x1b`, `\\u2028`; `\\u0085` inside JSON strings), see `bridge.textsafe`.

The modules: `cef`, `leef` and `json`, one per format; `fit`, re-encoding one event under a
byte budget (a UDP datagram) by truncating the longest values or splitting it over several
messages; `fields` (field paths and maps), `builders` (the per-event field reading and
escaping CEF and LEEF share) and `common`; `payload`, a sink's choice of format as one
`Formatter`. The names below are the ones sinks and tests use.
"""

from bridge.sinks.formats.cef import CefConfig, CefEncoder, cef_encoder, encode_cef, fit_cef
from bridge.sinks.formats.common import PART_KEY, FitError, KvRecord, Oversize, as_text
from bridge.sinks.formats.fields import CustomField, FieldMap, compile_path
from bridge.sinks.formats.json import encode_json, fit_json, json_safe
from bridge.sinks.formats.leef import LeefConfig, LeefEncoder, encode_leef, fit_leef, leef_encoder
from bridge.sinks.formats.payload import Formatter, PayloadFormat, formatter

__all__ = [
    "PART_KEY", "CefConfig", "CefEncoder", "CustomField", "FieldMap", "FitError", "Formatter",
    "KvRecord", "LeefConfig", "LeefEncoder", "Oversize", "PayloadFormat", "as_text",
    "cef_encoder", "compile_path", "encode_cef", "encode_json", "encode_leef", "fit_cef",
    "fit_json", "fit_leef", "formatter", "json_safe", "leef_encoder",
]
