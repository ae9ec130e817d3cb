"""The HTTP transport of every HTTP sink: one keep-alive session, bounded concurrency, one POST
at a time per caller, never a redirect to another origin, and every failure turned into the
sink error that tells the outbox worker what to do.

What a status means is decided once, here, for every preset: 2xx is delivered; 408, 425, 429
and a 503 with `Retry-After` are throttling (`ThrottledError`: the receiver said *later*);
other 5xx and 3xx are failures worth retrying; every other status is a refusal of the content
(`PermanentDeliveryError`), described by the preset (PagerDuty's `errors`, Slack's error word)
from an excerpt of the answer. A request that never reached anybody (refused, unresolvable,
TLS) is `DestinationUnavailableError`.

Redirects are not followed by default. A client following a 301/302 turns the POST into a
body-less GET that the new place may well answer 200 (an event acknowledged, never delivered),
and following a 307/308 re-posts the body and our credentials to whoever the receiver names.
A 3xx is a delivery error that says where it pointed; `redirects: same_origin` follows 307/308
within the configured origin only, where the body and method are kept by definition.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urljoin, urlsplit

import aiohttp

from bridge.net import USER_AGENT, parse_retry_after
from bridge.sinks.base import (
    DestinationUnavailableError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    ThrottledError,
)

# "Later", not "no": retried without spending attempts (see ThrottledError).
THROTTLE_STATUSES = frozenset({408, 425, 429})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
BODY_KEEPING_REDIRECTS = frozenset({307, 308})  # RFC 9110 §15.4: method and body unchanged
MAX_REDIRECTS = 3
# What is read of an answer: enough for any service's error document, bounded because a
# hostile receiver could answer with gigabytes.
MAX_ANSWER_BYTES = 64 * 1024
EXCERPT_CHARS = 300

Redirects = Literal["refuse", "same_origin"]


@dataclass(frozen=True, slots=True)
class Request:
    """One POST: the body and the headers of this request only (the session's headers, such as
    authorization and the user agent, are added by the service)."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: str  # at most MAX_ANSWER_BYTES of the answer, decoded leniently
    retry_after: float | None = None

    @property
    def excerpt(self) -> str:
        """The start of the answer, as the receiver wrote it: what a dead letter or a log line
        quotes (whoever displays it makes it inert: bridge/textsafe.py, the log renderer)."""
        text = self.body
        return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS - 1] + "…"


Describe = Callable[[Response], str]


def judge(response: Response, describe: Describe | None = None) -> None:
    """Return if the receiver accepted; otherwise raise the error its status means.
    `describe` words a refusal (default: the answer's excerpt)."""
    status = response.status
    if 200 <= status < 300:
        return
    said = (describe or _excerpt)(response)
    text = f"receiver answered {status}: {said}" if said else f"receiver answered {status}"
    if status in THROTTLE_STATUSES or (status == 503 and response.retry_after is not None):
        raise ThrottledError(text, response.retry_after)
    if status >= 500 or status in REDIRECT_STATUSES:
        raise RetryableDeliveryError(text, response.retry_after)
    raise PermanentDeliveryError(text)


def _excerpt(response: Response) -> str:
    return response.excerpt


class HttpService:
    """One receiver URL, one session. `post` never raises anything but the sink errors."""

    def __init__(self, url: str, *, timeout: float, concurrency: int, tls: ssl.SSLContext,
                 redirects: Redirects = "refuse", headers: Mapping[str, str] | None = None
                 ) -> None:
        self.url = url
        self.timeout = timeout
        self.concurrency = concurrency
        self.redirects = redirects
        self._tls = tls
        self._headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._tls, limit=self.concurrency),
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def post(self, request: Request) -> Response:
        """POST to the configured URL, following only what `redirects` allows."""
        await self.open()
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            response, location = await self._post_once(url, request)
            if response.status not in REDIRECT_STATUSES:
                return response
            url = self._follow(url, response.status, location)
        raise RetryableDeliveryError(f"receiver redirected more than {MAX_REDIRECTS} times")

    async def _post_once(self, url: str, request: Request) -> tuple[Response, str]:
        assert self._session is not None
        try:
            async with self._session.post(url, data=request.body, headers=request.headers,
                                          allow_redirects=False) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES)
                answer = Response(resp.status, raw.decode("utf-8", errors="replace"),
                                  parse_retry_after(resp.headers.get("Retry-After")))
                return answer, resp.headers.get("Location", "")
        except TimeoutError:
            raise RetryableDeliveryError(f"POST timed out after {self.timeout:g}s") from None
        except aiohttp.ClientConnectorError as exc:  # refused, unresolvable, TLS: never sent
            raise DestinationUnavailableError(f"POST failed: {type(exc).__name__}: {exc}") from None
        except aiohttp.ClientError as exc:
            raise RetryableDeliveryError(f"POST failed: {type(exc).__name__}: {exc}") from None

    def _follow(self, url: str, status: int, location: str) -> str:
        """Where a redirect may be followed to, or a delivery error saying where it pointed."""
        target = urljoin(url, location)
        same_origin = origin(target) == origin(self.url)
        if (self.redirects == "same_origin" and status in BODY_KEEPING_REDIRECTS
                and same_origin and location):
            return target
        where = without_query(target) if location else "nowhere (no Location)"
        hint = ("update the sink's url" if status in (301, 308) else
                "set redirects: same_origin to follow it" if status in BODY_KEEPING_REDIRECTS
                and same_origin else "redirects are not followed")
        raise RetryableDeliveryError(f"receiver answered {status} redirecting to {where}; "
                                     f"not followed ({hint})")


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def without_query(url: str) -> str:
    """A URL fit for a log line: a query or a fragment may carry a token."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}"
