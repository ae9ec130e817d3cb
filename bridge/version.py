"""The version, in one place, for the User-Agent and `bridge --version`."""

__version__ = "0.1.0"
