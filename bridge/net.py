"""What sources and sinks share about the network: which hosts are this machine's own.

(The HTTP helpers that sources and sinks share, backoff, Retry-After and TLS contexts, join
this module as the vendor client and the sinks move onto it.)
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname or "" (all interfaces): assume reachable from outside
