"""Text a hostile vendor or receiver writes to reach an operator's terminal or to forge lines,
restated from issue 15 independently of `bridge.textsafe`: the characters no output may carry
raw, the ones Python's `str.splitlines()` breaks on, and payloads that did damage before."""

from __future__ import annotations

from hypothesis import strategies as st

# C0 controls, DEL, C1 controls, U+2028/2029 and the bidi controls (LRM/RLM, ALM, embeddings,
# overrides and isolates).
UNSAFE = frozenset(
    [chr(c) for c in range(0x20)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)]
    + ["\u061c", "\u200e", "\u200f", "\u2028", "\u2029"]
    + [chr(c) for c in range(0x202A, 0x202F)] + [chr(c) for c in range(0x2066, 0x206A)]
)
# Tab is the one that forges nothing on the wire: CEF values and headers may carry it raw.
UNSAFE_BUT_TAB = UNSAFE - {"\t"}
# Every character `str.splitlines()` ends a line at (CR LF counts as one break).
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

FORGED = "NEW       critical scanorbit finding FORGED admin password reset"
# What worked against the terminal before issue 15: clear screen, window title, clipboard
# write, a bare CR that rewrites the start of the line, and line breaks that start a fake event.
HOSTILE_TITLE = (
    "S3 bucket\x1b[2J\x1b[H\x1b]0;owned\x07\x1b]52;c;cm0gLXJmIH4=\x07\r" + FORGED
    + "\n" + FORGED + "\x0b\x0c\x1c\x1d\x1e\x85\u2028" + FORGED + "\u2029\x00nul\x7fdel"
    + "\x9b31m csi8 \u202eevil\u202c \u2066iso\u2069 \u200e\u200f\u061c end"
)
# The same as a CEF event someone tries to inject into a receiver's stream.
FORGED_CEF = "CEF:0|Acme|Bridge|1|finding:new|FORGED|10|msg=forged"
HOSTILE_CEF_TITLE = f"x\u2028{FORGED_CEF}\x85{FORGED_CEF}\x1e{FORGED_CEF}\x00{FORGED_CEF}"

_hostile_chars = st.one_of(
    st.sampled_from(sorted(UNSAFE)),
    st.sampled_from([*"\\|=\"]^~ ", "\x1b[2J", "\x1b]0;t\x07", "\r\n", FORGED_CEF]),
    st.characters(exclude_categories=("Cs",)),
)
# Any text, with the unsafe characters and escape sequences drawn often.
hostile_text = st.lists(_hostile_chars, max_size=40).map("".join)


def raw_unsafe(text: str, allowed: str = "") -> set[str]:
    """The unsafe characters (less `allowed`) that `text` holds raw."""
    return {c for c in text if c in UNSAFE and c not in allowed}
