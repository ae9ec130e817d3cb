"""bridge: poll security-posture APIs, diff against local state, route events to sinks."""

from bridge.version import __version__

__all__ = ["__version__"]
