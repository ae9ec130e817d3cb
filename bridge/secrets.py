"""Secrets come from the environment or from files, and every one we load is remembered so the
log processor can redact it wherever it shows up (messages, exceptions, URLs)."""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

_known: set[str] = set()
_lock = threading.Lock()

# Shapes we redact even when nobody configured them (a key pasted into a log line by hand):
# HTTP credentials here; each source and sink adds its own vendor's key shapes through
# `ComponentConfig.secret_patterns`, registered when the component is discovered.
_shapes: list[str] = [r"(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}", r"(?i:basic)\s+[A-Za-z0-9+/=]{8,}"]
_shape_re = re.compile("|".join(f"(?:{p})" for p in _shapes))
REDACTED = "***"
# What no credential contains and no HTTP header may carry (tab aside).
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Far above any key or certificate password; a path to /dev/zero or a log file is a mistake
# that must end in a config error, not in reading gigabytes into memory.
MAX_SECRET_FILE_BYTES = 64 * 1024


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message says why, naming the file."""


def remember(value: str) -> str:
    """Register a secret value for redaction; returns it unchanged."""
    if len(value) >= 4:
        with _lock:
            _known.add(value)
    return value


def read_secret_file(path: Path) -> str:
    """Read a secret file (systemd LoadCredential, Kubernetes Secret volume), stripped of
    surrounding whitespace. Raises `OSError` when it cannot be opened and `SecretFileError`
    when it must not be used: writable by everyone (anyone on the host could swap the key),
    larger than `MAX_SECRET_FILE_BYTES`, empty, not UTF-8, or with a line break inside."""
    # Non-blocking open: a named pipe without a writer must not hang the loader forever.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
        os.set_blocking(f.fileno(), True)
        mode = os.fstat(f.fileno()).st_mode
        if mode & stat.S_IWOTH:
            raise SecretFileError(f"{path} is writable by every user (mode "
                                  f"{stat.S_IMODE(mode):04o}): refused, anyone on this host "
                                  "could replace the secret; chmod o-w it")
        data = f.read(MAX_SECRET_FILE_BYTES + 1)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise SecretFileError(f"{path} is larger than {MAX_SECRET_FILE_BYTES // 1024} KiB: "
                              "not a secret file")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(f"{path} is not UTF-8 text") from None
    if not value:
        raise SecretFileError(f"{path} is empty")
    if CONTROL_CHARS.search(value):
        raise SecretFileError(f"{path} has a line break or another control character inside "
                              "the secret (one secret per file)")
    return remember(value)


def redact(text: str) -> str:
    """Replace every known secret and every secret-shaped token in `text`."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    return _shape_re.sub(REDACTED, text)


def register_shapes(patterns: Iterable[str]) -> None:
    """Redact text of these shapes (regular expressions) from now on, wherever it appears."""
    global _shape_re
    with _lock:
        new = [p for p in patterns if p not in _shapes]
        if new:
            re.compile("|".join(new))  # a bad pattern fails here, naming itself
            _shapes.extend(new)
            _shape_re = re.compile("|".join(f"(?:{p})" for p in _shapes))
