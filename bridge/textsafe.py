"""Text from vendors and receivers made safe to show on a terminal or to put in one line.

Titles, keys, error bodies and notes are written by people we do not control. Raw, a control
character in them can clear the operator's screen (`ESC[2J`), retitle the window (OSC 0), write
the clipboard (OSC 52), or start a new line that looks like one of ours (CR, LF, and the
characters Python's `str.splitlines()` and some receivers also break on: VT, FF, FS, GS, RS,
NEL U+0085, U+2028/U+2029); bidirectional overrides and isolates make text read in a different
order than it is stored (`evil\u202egnp.exe`). Each such character is written as a visible
escape instead (`\\x1b`, `\\u2028`, `\\n`), which any terminal shows as plain text.

Backslashes themselves are left alone in `printable`: a Windows path stays readable, and the
only cost is that a title holding the four characters `\\x1b` looks like an escaped ESC, which
nobody's terminal acts on. The wire formats, which must be unambiguous, escape their
backslashes first and then use `UNSAFE_ON_WIRE` (bridge/sinks/formats.py).

`str.isprintable()` is the fast guard everywhere: it is False for every character here (all of
them are Unicode "Other" or line/paragraph separators), it runs at C speed, and plain text
passes it, so the regular expression only runs on the rare text that needs it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# C0 controls, DEL, C1 controls (NEL among them), the Arabic letter mark, LRM/RLM, the line and
# paragraph separators, the bidi embeddings/overrides (U+202A-202E) and isolates (U+2066-2069).
_UNSAFE_CLASS = (r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                 r"\u2066-\u2069")
UNSAFE = re.compile(f"[{_UNSAFE_CLASS}]")
# The same less TAB, LF and CR, which every wire format already escapes in its own way (CEF
# `\n`, LEEF `\t`...): what is left for the shared escape after the format's own.
UNSAFE_ON_WIRE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f"
                            r"\u2028\u2029\u202a-\u202e\u2066-\u2069]")

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def visible(char: str) -> str:
    """One unsafe character as printable ASCII: `\\t`, `\\n`, `\\r`, `\\xHH` or `\\uHHHH`."""
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _visible_match(match: re.Match[str]) -> str:
    return visible(match.group())


def escape_unsafe(text: str, pattern: re.Pattern[str] = UNSAFE,
                  render: Callable[[re.Match[str]], str] = _visible_match) -> str:
    """`text` with every character `pattern` matches replaced by `render(match)`; the same
    object back, at C speed, when it holds none of them."""
    if text.isprintable():
        return text
    return pattern.sub(render, text)


def printable(text: str) -> str:
    """`text` as one line that cannot act on a terminal: every control, line-breaking and
    bidirectional formatting character becomes its visible escape (`\\x1b`, `\\u2028`)."""
    return escape_unsafe(text)

