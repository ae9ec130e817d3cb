"""What sources and sinks share about the network, so neither imports the other's client:
backoff with full jitter, `Retry-After`, the user agent, one way to build a client TLS
context, one loud warning when verification is off, and which hosts are this machine's own.
"""

from __future__ import annotations

import ipaddress
import random
import ssl
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import structlog

from bridge import metrics
from bridge.version import __version__

log = structlog.get_logger(__name__)

USER_AGENT = f"bridge/{__version__}"


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): spreads retries out.

    The exponent is capped: a receiver down for hours counts thousands of attempts, and
    `2.0 ** 1024` overflows a float (which would kill the worker in its error handler)."""
    return random.uniform(0.0, min(maximum, initial * (2.0 ** min(attempt, 64))))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def describe_tls_error(exc: BaseException) -> str:
    """The OpenSSL reason, e.g. "certificate verify failed: self-signed certificate"."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def client_tls_context(*, verify: bool = True, ca_bundle: Path | None = None,
                       client_cert: Path | None = None, client_key: Path | None = None,
                       key_password: str | None = None) -> ssl.SSLContext:
    """The TLS context of every outgoing connection: TLS 1.2 or newer, the system's CAs or
    `ca_bundle`, a client certificate for mutual TLS. `verify=False` checks nothing (the
    caller warns with `warn_tls_unverified`). Raises ValueError naming what could not be
    loaded."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca_bundle is not None:
            ctx.load_verify_locations(cafile=str(ca_bundle))
        if client_cert is not None:
            ctx.load_cert_chain(str(client_cert), str(client_key) if client_key else None,
                                key_password)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(str(p) for p in (ca_bundle, client_cert, client_key) if p)
        raise ValueError(f"cannot load TLS files ({files}): {describe_tls_error(exc)}") from None
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def warn_tls_unverified(component: str, target: str) -> None:
    """Said at startup, once per component, in the same words for sources and sinks."""
    log.warning("tls_verification_disabled", component=component, target=target,
                detail="the peer's certificate is NOT checked: anyone on the path can read "
                       "and forge this traffic")
    metrics.TLS_VERIFY_DISABLED.labels(component).set(1)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname or "" (all interfaces): assume reachable from outside
