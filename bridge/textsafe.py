"""Text from vendors and receivers made safe to show on a terminal or to put in one line.

Titles, keys, error bodies and notes are written by people we do not control. Raw, a control
character in them can clear the operator's screen (`ESC[2J`), retitle the window (OSC 0), write
the clipboard (OSC 52), or start a new line that looks like one of ours (CR, LF, and the
characters Python's `str.splitlines()` and some receivers also break on: VT, FF, FS, GS, RS,
NEL U+0085, U+2028/U+2029); bidirectional overrides and isolates make text read in a different
order than it is stored (`evil\\u202egnp.exe` shows as `evilexe.png`). Each such character is
written as a visible escape instead (`\\x1b`, `\\u2028`, `\\n`), which any terminal shows as
plain text.

Backslashes themselves are left alone in `printable`: a Windows path stays readable, and the
only cost is that a title holding the four characters `\\x1b` looks like an escaped ESC, which
nobody's terminal acts on. The wire formats, which must be unambiguous, escape their
backslashes first and then use `UNSAFE_EXCEPT_TAB_LF_CR` (bridge/sinks/formats/).

Speed matters on the encoders' path, so the test for "is there anything to do" is cheap: ASCII
text (told apart in O(1) by `str.isascii()`) is checked by one C-speed `bytes.translate` pass,
several times faster than `str.isprintable()`, which has no ASCII fast path; other text by
`str.isprintable()`, False for every character here. Only text that holds one pays for the
regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def visible(char: str) -> str:
    """One unsafe character as printable ASCII: `\\t`, `\\n`, `\\r`, `\\xHH` or `\\uHHHH`."""
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible_match(match: re.Match[str]) -> str:
    return visible(match.group())


class Unsafe:
    """A set of characters an output must not carry raw."""

    __slots__ = ("ascii_flags", "pattern")

    def __init__(self, char_class: str) -> None:
        self.pattern = re.compile(f"[{char_class}]")
        # For `bytes.translate`: 0 for the ASCII characters of the set, 1 for every other byte.
        self.ascii_flags = bytes(0 if b < 0x80 and self.pattern.match(chr(b)) else 1
                                 for b in range(256))

    def found_in(self, text: str) -> bool:
        """Whether `text` holds a character of the set, at C speed for plain text."""
        if text.isascii():
            return 0 in text.encode().translate(self.ascii_flags)
        return not text.isprintable() and self.pattern.search(text) is not None

    def escape(self, text: str, render: Callable[[re.Match[str]], str] = visible_match) -> str:
        """`text` with each character of the set replaced by `render(match)` (its visible
        escape by default); `text` itself when it holds none."""
        return self.pattern.sub(render, text) if self.found_in(text) else text


# C0 controls, DEL, C1 controls (NEL among them), the Arabic letter mark, LRM/RLM, the line and
# paragraph separators, the bidi embeddings/overrides (U+202A-202E) and isolates (U+2066-2069).
UNSAFE = Unsafe(r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069")
# The same less TAB, LF and CR, which the wire formats handle in their own way (CEF and LEEF
# escape LF and CR as `\n` `\r`, LEEF a tab as `\t`, JSON all three; CEF keeps a tab, which
# forges nothing): what is left for the shared escape after the format's own.
UNSAFE_EXCEPT_TAB_LF_CR = Unsafe(r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f"
                                 r"\u2028\u2029\u202a-\u202e\u2066-\u2069")


def printable(text: str) -> str:
    """`text` as one line that cannot act on a terminal: every control, line-breaking and
    bidirectional formatting character becomes its visible escape (`\\x1b`, `\\u2028`)."""
    return UNSAFE.escape(text)
