"""The settings every HTTP sink shares: transport (timeout, concurrency, TLS, redirects) and
grouping (digests and the storm guard, bridge/grouping.py). A preset adds its endpoint, its
credentials and its request builder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from bridge.grouping import GroupingSettings
from bridge.secrets import remember
from bridge.sinks.base import SinkConfig

if TYPE_CHECKING:
    from bridge.sinks.http.sink import HttpSink, RequestBuilder


class HttpSinkConfig(SinkConfig, GroupingSettings):
    timeout: float = Field(default=10.0, gt=0)
    # Requests in flight at once (different items; one item's events go one after another).
    concurrency: int = Field(default=8, ge=1, le=256)
    verify_tls: bool = True
    ca_bundle: Path | None = None
    # Mutual TLS: a client certificate (and its key, unless the certificate file holds it).
    client_cert: Path | None = None
    client_key: Path | None = None
    # "refuse": any 3xx is a delivery error naming where it pointed. "same_origin": a 307/308
    # to the same scheme, host and port is followed (up to 3 hops); anything else is refused.
    redirects: Literal["refuse", "same_origin"] = "refuse"

    def endpoint(self) -> str:
        """The URL to POST to (for some presets a secret itself: say less, see `origin`)."""
        raise NotImplementedError

    @property
    def origin(self) -> str:
        """scheme://host[:port] of the endpoint: what logs may name (paths carry tokens)."""
        parts = urlsplit(self.endpoint())
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}"

    def session_headers(self) -> dict[str, str]:
        """Headers of every request (credentials, custom headers)."""
        return {}

    def request_builder(self) -> RequestBuilder:
        raise NotImplementedError(f"{type(self).__name__} has no request builder")

    def build(self) -> HttpSink:
        from bridge.sinks.http.sink import HttpSink

        return HttpSink(self)


def secret_url(value: SecretStr, where: str) -> SecretStr:
    """Check a URL that is itself a credential (a Slack or Teams webhook) and remember its
    path and query as secrets too: a receiver quoting only the path it was asked for must not
    reveal the token. `where` tells the operator where to find the URL."""
    url = value.get_secret_value()
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"an https:// URL ({where})")
    parts = urlsplit(url)
    for part in (parts.path, parts.query, f"{parts.path}?{parts.query}"):
        if len(part) >= 8:
            remember(part)
    return value
