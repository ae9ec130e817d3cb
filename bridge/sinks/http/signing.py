"""Standard Webhooks signatures (https://www.standardwebhooks.com/): a receiver holding the
secret proves that a POST came from us, unchanged, and recently.

`webhook-signature` is `v1,<base64 of HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`;
the key is the base64 part of a `whsec_…` secret. With several secrets (a rotation in progress)
the header carries one signature per secret, separated by spaces, and a receiver accepts the
request when any of them verifies with a secret it holds: rotate by adding the new secret,
switching the receiver, then removing the old one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

PREFIX = "whsec_"
# The specification asks for secrets of 24 to 64 random bytes.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError saying what is wrong, never
    quoting the secret."""
    if not secret.startswith(PREFIX):
        raise ValueError(f"a signing secret starts with {PREFIX!r} followed by base64")
    encoded = secret[len(PREFIX):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a signing secret is {PREFIX!r} followed by base64; this one is "
                         "not valid base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a signing secret holds {MIN_KEY_BYTES} to {MAX_KEY_BYTES} random "
                         f"bytes; this one holds {len(key)}")
    return key


def signature(keys: Sequence[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: one `v1,<sig>` per key, space-separated."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys)
