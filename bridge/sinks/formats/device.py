"""Which device a CEF/LEEF header names: the vendor and product that saw the item.

SIEMs (ArcSight, QRadar, Sentinel's CEF connector) choose the parser, the log-source type and
the correlation rules by the header's Device Vendor and Device Product. `bridge|bridge` for
every event would put ScanOrbit findings and Microsoft 365 risk detections in one bucket, so by
default the header names the originating vendor and product, and Device Version is the bridge's
version (the thing that shaped the record). A configured `vendor`/`product` still wins.
"""

from __future__ import annotations

from collections.abc import Mapping

# Event `vendor` (a source's `vendor` class attribute) -> (Device Vendor, Device Product).
DEVICES: Mapping[str, tuple[str, str]] = {
    "scanorbit": ("ScanOrbit", "ScanOrbit"),
    "aether365": ("Aether365", "Aether365"),
    "ayliea": ("Ayliea", "Ayliea"),
}
FALLBACK = "bridge"


def device(vendor: str, configured_vendor: str | None,
           configured_product: str | None) -> tuple[str, str]:
    """(Device Vendor, Device Product) for an event of `vendor`: the configured words where
    set; else the vendor's own names; else (a plugin vendor) its word; else `bridge`."""
    known = DEVICES.get(vendor)
    word = vendor or FALLBACK
    default = known if known is not None else (word, word)
    return (configured_vendor or default[0], configured_product or default[1])
