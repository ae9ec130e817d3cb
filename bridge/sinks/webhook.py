"""Generic webhook sink: one JSON POST per event, keep-alive, bounded concurrency across items
and strict order within one item (`bridge.sinks.delivery`).

Each request carries `webhook-id` (the event id) and `webhook-timestamp`, the Standard Webhooks
headers, so a receiver can drop replays. 2xx is delivered; 408, 425, 429 and 5xx are retried
(honouring `Retry-After`; 408, 425, 429 and a 503 with `Retry-After` are throttling and spend no
attempts); any other status is a permanent rejection of that event.

Redirects are not followed by default. A client following a 301/302 turns the POST into a
body-less GET that the new place may well answer 200 (an event acknowledged, never delivered),
and following a 307/308 re-posts the body and our credentials to whoever the receiver names.
A 3xx is a delivery error that says where it pointed; `redirects: same_origin` follows 307/308
within the configured origin only, where the body and method are kept by definition.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
import structlog
from pydantic import Field, SecretStr

from bridge.model import Event
from bridge.net import USER_AGENT, client_tls_context, parse_retry_after, warn_tls_unverified
from bridge.sinks.base import (
    DestinationUnavailableError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Sink,
    SinkConfig,
    ThrottledError,
)
from bridge.sinks.delivery import deliver_per_item

log = structlog.get_logger(__name__)
# "Later", not "no": retried without spending attempts (see ThrottledError).
THROTTLE_STATUSES = frozenset({408, 425, 429})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
BODY_KEEPING_REDIRECTS = frozenset({307, 308})  # RFC 9110 §15.4: method and body unchanged
MAX_REDIRECTS = 3


class WebhookSinkConfig(SinkConfig):
    type: Literal["webhook"]
    secret_patterns = (r"whsec_[A-Za-z0-9+/=]{8,}",)
    url: str = Field(pattern=r"^https?://")
    # Sent as `Authorization: Bearer …` when set (use `${ENV}` or `bearer_token_file`).
    bearer_token: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=10.0, gt=0)
    concurrency: int = Field(default=8, ge=1, le=256)
    verify_tls: bool = True
    ca_bundle: Path | None = None
    # Mutual TLS: a client certificate (and its key, unless the certificate file holds it).
    client_cert: Path | None = None
    client_key: Path | None = None
    # "refuse": any 3xx is a delivery error naming where it pointed. "same_origin": a 307/308
    # to the same scheme, host and port is followed (up to 3 hops); anything else is refused.
    redirects: Literal["refuse", "same_origin"] = "refuse"

    def build(self) -> WebhookSink:
        return WebhookSink(self)


class WebhookSink(Sink[WebhookSinkConfig]):
    def __init__(self, config: WebhookSinkConfig) -> None:
        super().__init__(config)
        self._session: aiohttp.ClientSession | None = None
        # Built here so that unreadable TLS files fail the config at startup (or a reload),
        # not every delivery; said at startup too, not first at the first delivery.
        self._tls = client_tls_context(verify=config.verify_tls, ca_bundle=config.ca_bundle,
                                       client_cert=config.client_cert,
                                       client_key=config.client_key)
        if not config.verify_tls:
            warn_tls_unverified(config.name, config.url)

    async def open(self) -> None:
        cfg = self.config
        tls = self._tls
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json", **cfg.headers}
        if cfg.bearer_token is not None:
            headers["Authorization"] = f"Bearer {cfg.bearer_token.get_secret_value()}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=cfg.concurrency),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=cfg.timeout),
        )

    async def send(self, events: Sequence[Event]) -> None:
        if self._session is None:
            await self.open()
        await deliver_per_item(events, self._post, concurrency=self.config.concurrency)

    async def _post(self, event: Event) -> None:
        assert self._session is not None
        headers = {"webhook-id": event.id, "webhook-timestamp": str(int(time.time()))}
        body = event.to_json().encode()
        url = self.config.url
        for _ in range(MAX_REDIRECTS + 1):
            status, location, retry_after, text = await self._post_once(url, body, headers)
            if status not in REDIRECT_STATUSES:
                break
            url = self._follow(url, status, location)
        else:
            raise RetryableDeliveryError(f"receiver redirected more than {MAX_REDIRECTS} times")
        if 200 <= status < 300:
            return
        if status in THROTTLE_STATUSES or (status == 503 and retry_after is not None):
            raise ThrottledError(f"receiver answered {status}: {text}", retry_after)
        if status >= 500:
            raise RetryableDeliveryError(f"receiver answered {status}: {text}", retry_after)
        raise PermanentDeliveryError(f"receiver answered {status}: {text}")

    async def _post_once(self, url: str, body: bytes, headers: dict[str, str]
                         ) -> tuple[int, str, float | None, str]:
        """One POST, never following a redirect: (status, Location, Retry-After, excerpt)."""
        assert self._session is not None
        try:
            async with self._session.post(url, data=body, headers=headers,
                                          allow_redirects=False) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                text = (await resp.text(errors="replace"))[:300] if status >= 300 else ""
                return status, resp.headers.get("Location", ""), retry_after, text
        except TimeoutError:
            raise RetryableDeliveryError(f"POST timed out after {self.config.timeout:g}s") from None
        except aiohttp.ClientConnectorError as exc:  # refused, unresolvable, TLS: never sent
            raise DestinationUnavailableError(f"POST failed: {type(exc).__name__}: {exc}") from None
        except aiohttp.ClientError as exc:
            raise RetryableDeliveryError(f"POST failed: {type(exc).__name__}: {exc}") from None

    def _follow(self, url: str, status: int, location: str) -> str:
        """Where a redirect may be followed to, or a delivery error saying where it pointed."""
        target = urljoin(url, location)
        same_origin = _origin(target) == _origin(self.config.url)
        if (self.config.redirects == "same_origin" and status in BODY_KEEPING_REDIRECTS
                and same_origin and location):
            return target
        where = _without_query(target) if location else "nowhere (no Location)"
        hint = ("update the sink's url" if status in (301, 308) else
                "set redirects: same_origin to follow it" if status in BODY_KEEPING_REDIRECTS
                and same_origin else "redirects are not followed")
        raise RetryableDeliveryError(f"receiver answered {status} redirecting to {where}; "
                                     f"not followed ({hint})")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _without_query(url: str) -> str:
    """A redirect target fit for a log line: a query or a fragment may carry a token."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}"
