"""Secrets come from the environment or from files, and every one we load is remembered so the
log processor can redact it wherever it shows up (messages, exceptions, URLs)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

_known: set[str] = set()
_lock = threading.Lock()

# Shapes we redact even when nobody configured them (a key pasted into a log line by hand).
SECRET_SHAPES = re.compile(
    r"(sk_live_[0-9A-Za-z]{8,}|ae_live_[0-9A-Za-z_\-]{8,}|ayliea_pk_[0-9A-Za-z_\-]{8,}"
    r"|whsec_[A-Za-z0-9+/=]{8,}|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"
    r"|(?i:basic)\s+[A-Za-z0-9+/=]{8,})"
)
REDACTED = "***"


def remember(value: str) -> str:
    """Register a secret value for redaction; returns it unchanged."""
    if len(value) >= 4:
        with _lock:
            _known.add(value)
    return value


def read_secret_file(path: Path) -> str:
    """Read a secret file (systemd LoadCredential, Kubernetes Secret volume), stripped of newlines."""
    return remember(path.read_text(encoding="utf-8").strip())


def redact(text: str) -> str:
    """Replace every known secret and every secret-shaped token in `text`."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    return SECRET_SHAPES.sub(REDACTED, text)
