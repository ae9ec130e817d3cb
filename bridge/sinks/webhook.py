"""Generic webhook sink: one JSON POST per event, keep-alive, bounded concurrency across items
and strict order within one item.

Each request carries `webhook-id` (the event id) and `webhook-timestamp`, the Standard Webhooks
headers, so a receiver can drop replays. 2xx is delivered; 408, 425, 429 and 5xx are retried
(honouring `Retry-After`); any other status is a permanent rejection of that event.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import aiohttp
import structlog
from pydantic import Field, SecretStr

from bridge import metrics
from bridge.http import USER_AGENT, parse_retry_after
from bridge.model import Event
from bridge.sinks.base import (
    DestinationUnavailableError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Sink,
    SinkConfig,
)

log = structlog.get_logger(__name__)
RETRY_STATUSES = frozenset({408, 425, 429})


class WebhookSinkConfig(SinkConfig):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    # Sent as `Authorization: Bearer …` when set (use `${ENV}` or `bearer_token_file`).
    bearer_token: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=10.0, gt=0)
    concurrency: int = Field(default=8, ge=1, le=256)
    verify_tls: bool = True
    ca_bundle: Path | None = None

    def build(self) -> WebhookSink:
        return WebhookSink(self)


class WebhookSink(Sink[WebhookSinkConfig]):
    def __init__(self, config: WebhookSinkConfig) -> None:
        super().__init__(config)
        self._session: aiohttp.ClientSession | None = None
        if not config.verify_tls:  # said at startup, not first at the first delivery
            log.warning("tls_verification_disabled", sink=config.name)
            metrics.TLS_VERIFY_DISABLED.labels(config.name).set(1)

    async def open(self) -> None:
        cfg = self.config
        tls: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(cfg.ca_bundle) if cfg.ca_bundle else None)
            if cfg.verify_tls else False
        )
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
        # Items go concurrently, but one item's events go one after another and stop at a
        # retryable failure: a `resolved` must never reach the receiver before its `new`.
        chains: dict[str, list[Event]] = {}
        for e in events:
            chains.setdefault(e.item_uid, []).append(e)
        outcome: dict[str, Exception | None] = {}

        async def post_in_order(chain: list[Event]) -> None:
            for i, e in enumerate(chain):
                try:
                    await self._post(e)
                    outcome[e.id] = None
                except PermanentDeliveryError as exc:
                    outcome[e.id] = exc  # dead-lettered; the item's later events may follow
                except Exception as exc:
                    outcome[e.id] = exc
                    held = type(exc) if isinstance(exc, RetryableDeliveryError) else RetryableDeliveryError
                    for later in chain[i + 1:]:
                        outcome[later.id] = held("not sent: an earlier event of the same item failed")
                    return

        await asyncio.gather(*(post_in_order(c) for c in chains.values()))
        results = [outcome[e.id] for e in events]
        retryable = [r for r in results if isinstance(r, RetryableDeliveryError)]
        rejected = [(e, r) for e, r in zip(events, results, strict=True)
                    if isinstance(r, PermanentDeliveryError)]
        other = [r for r in results if isinstance(r, BaseException)
                 and not isinstance(r, RetryableDeliveryError | PermanentDeliveryError)]
        if other:
            raise other[0]
        if retryable:
            waits = [r.retry_after for r in retryable if r.retry_after is not None]
            # Only an unreachable receiver spares the attempts (see DestinationUnavailableError).
            unreachable = all(isinstance(r, DestinationUnavailableError) for r in retryable)
            raise (DestinationUnavailableError if unreachable else RetryableDeliveryError)(
                f"{len(retryable)} of {len(events)} deliveries failed: {retryable[0]}",
                retry_after=max(waits) if waits else None,
                delivered=[e.id for e in events if outcome[e.id] is None],
            )
        if rejected:
            raise PermanentDeliveryError(str(rejected[0][1]), event_ids=[e.id for e, _ in rejected])

    async def _post(self, event: Event) -> None:
        assert self._session is not None
        headers = {"webhook-id": event.id, "webhook-timestamp": str(int(time.time()))}
        try:
            async with self._session.post(self.config.url, data=event.to_json().encode(),
                                          headers=headers) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                body = (await resp.text(errors="replace"))[:300] if status >= 300 else ""
        except TimeoutError:
            raise RetryableDeliveryError(f"POST timed out after {self.config.timeout:g}s") from None
        except aiohttp.ClientConnectorError as exc:  # refused, unresolvable, TLS: never sent
            raise DestinationUnavailableError(f"POST failed: {type(exc).__name__}: {exc}") from None
        except aiohttp.ClientError as exc:
            raise RetryableDeliveryError(f"POST failed: {type(exc).__name__}: {exc}") from None
        if 200 <= status < 300:
            return
        if status in RETRY_STATUSES or status >= 500:
            raise RetryableDeliveryError(f"receiver answered {status}: {body}", retry_after)
        raise PermanentDeliveryError(f"receiver answered {status}: {body}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
