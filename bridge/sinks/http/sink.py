"""One sink for every HTTP preset: events become requests through the preset's
`RequestBuilder` (a pure encoder: event → body and headers), the `HttpService` moves them, and
`judge` says what the answer means. Per-event delivery goes through `deliver_per_item`
(bounded concurrency across items, strict order within one); digests and storm summaries are
one request each (bridge/grouping.py)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from bridge.grouping import Digest, DigestSink, StormSummary
from bridge.model import Event
from bridge.net import client_tls_context, warn_tls_unverified
from bridge.sinks.base import PermanentDeliveryError, Sink
from bridge.sinks.delivery import deliver_per_item
from bridge.sinks.http.config import HttpSinkConfig
from bridge.sinks.http.service import HttpService, Request, Response, judge
from bridge.templates import TemplateError


class RequestBuilder(ABC):
    """A preset's encoder. Pure: no I/O, so each is tested exhaustively without a socket."""

    content_type: str = "application/json"

    @abstractmethod
    def event(self, event: Event) -> Request: ...

    @abstractmethod
    def digest(self, digest: Digest) -> Request: ...

    @abstractmethod
    def summary(self, summary: StormSummary) -> Request: ...

    def describe(self, response: Response) -> str:
        """What a refusal says, for the dead letter (a service's error field, or an excerpt)."""
        return response.excerpt


class HttpSink(Sink[HttpSinkConfig], DigestSink):
    def __init__(self, config: HttpSinkConfig) -> None:
        super().__init__(config)
        self.builder = config.request_builder()
        # Built here so that unreadable TLS files fail the config at startup (or a reload),
        # not every delivery; said at startup too, not first at the first delivery.
        tls = client_tls_context(verify=config.verify_tls, ca_bundle=config.ca_bundle,
                                 client_cert=config.client_cert, client_key=config.client_key)
        if not config.verify_tls:
            warn_tls_unverified(config.name, config.origin)
        self.service = HttpService(
            config.endpoint(), timeout=config.timeout, concurrency=config.concurrency, tls=tls,
            redirects=config.redirects,
            headers={"Content-Type": self.builder.content_type, **config.session_headers()})

    async def open(self) -> None:
        await self.service.open()

    async def close(self) -> None:
        await self.service.close()

    async def send(self, events: Sequence[Event]) -> None:
        await deliver_per_item(events, self._deliver_event, concurrency=self.config.concurrency)

    async def send_digest(self, digest: Digest) -> None:
        await self.deliver(self.builder.digest(digest))

    async def send_summary(self, summary: StormSummary) -> None:
        await self.deliver(self.builder.summary(summary))

    async def _deliver_event(self, event: Event) -> None:
        try:
            request = self.builder.event(event)
        except TemplateError as exc:  # this event cannot be rendered: fix, then replay it
            raise PermanentDeliveryError(f"cannot render the request: {exc}") from None
        await self.deliver(request)

    async def deliver(self, request: Request) -> None:
        judge(await self.service.post(request), self.builder.describe)
