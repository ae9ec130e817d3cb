"""The one vendor HTTP client every source uses.

It owns everything about talking to a rate-limited SaaS API that is not vendor data: a token
bucket per rate-limit scope (set below the documented limit), `Retry-After` in seconds or as an
HTTP-date, exponential backoff with full jitter on 429/5xx/timeouts/connection errors, request
timeouts, TLS verification with an optional CA bundle, a proxy (explicit or `HTTPS_PROXY` from
the environment), and error messages that never carry credentials: every header value a client
is given is registered for redaction, and every `VendorError` message is redacted.

A vendor answer is hostile until proven otherwise. Redirects are followed by hand and only
within the base URL's origin (scheme, host and port): aiohttp itself would re-send our
`X-API-Key` to any host a `Location` names (it strips only `Authorization`), and an empty list
from that other host would look like "everything was fixed". A redirect elsewhere is an error
that fails the sweep. Bodies are read in chunks against `max_response_bytes`, counting both the
bytes on the wire and the decompressed ones, so neither a huge page nor a gzip bomb can take
the daemon's memory. JSON is decoded by `bridge.vendor_json`, which repairs what is safe to
repair instead of losing the page. Request paths are built with `url_path`, which encodes every
segment, so a vendor id can never step into another path.

What differs between vendors is only how they say "error"; an `ErrorScheme` describes that (where
the code and message are, whether a 200 body can be an error, which codes are worth a retry), so
the retry and rate-limit machinery stays one piece of code.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from bridge import metrics, progress, vendor_json
from bridge.net import (
    USER_AGENT,
    backoff_delay,
    client_tls_context,
    describe_tls_error,
    parse_retry_after,
    warn_tls_unverified,
)
from bridge.secrets import redact, remember

log = structlog.get_logger(__name__)

ErrorKind = Literal[
    "auth", "forbidden", "not_found", "client", "rate_limited", "server", "network", "decode",
    "schema", "tls", "redirect", "too_large",
    # A 429 that is a plan's quota, not the per-minute rate: retrying before its reset is a
    # retry storm, so it is not retried (the source backs off and reports it as coverage).
    "quota",
]
RETRYABLE_KINDS: frozenset[str] = frozenset({"rate_limited", "server", "network", "decode"})
# Errors about the connection as configured rather than one request: they fail the whole sweep.
# A redirect to another origin is one: whatever answers there must not count as the vendor.
SWEEP_FATAL_KINDS: frozenset[str] = frozenset({"auth", "redirect"})



class HttpConfig(BaseModel):
    """Per-source HTTP behaviour. Defaults are safe: verification on, bounded retries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(default=30.0, gt=0)
    verify_tls: bool = True
    ca_bundle: Path | None = None
    # Requests per minute for this source's rate-limit scope; None = the vendor's safe default.
    rate_limit_per_minute: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
    max_retries: int = Field(default=5, ge=0)
    backoff_initial: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=60.0, gt=0)
    max_retry_after: float = Field(default=300.0, gt=0)
    # An explicit proxy URL; without it `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` apply.
    proxy: str | None = Field(default=None, pattern=r"^https?://")
    # Redirects a request may follow within the base URL's origin (0: none). A redirect to
    # another scheme, host or port is never followed: it fails the sweep.
    max_redirects: int = Field(default=3, ge=0, le=10)
    # Largest response body accepted, decompressed and on the wire. A documented page is well
    # under 1 MiB; a larger answer fails its page (the sweep is incomplete) instead of the
    # daemon's memory. Each prefetched page may hold this much at once.
    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)


class VendorError(Exception):
    """A vendor call failed. `str()` is safe to log: no headers, no credentials."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(redact(message))
        self.kind = kind
        self.status = status
        self.code = code
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    @property
    def fails_sweep(self) -> bool:
        """True when no part of the sweep can be trusted (a bad key, a redirect elsewhere)."""
        return self.kind in SWEEP_FATAL_KINDS


class TokenBucket:
    """Client-side rate limiter: we wait here rather than collect 429s upstream."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()
        self.paused_until = 0.0

    async def acquire(self) -> float:
        """Take one token, sleeping as needed; returns seconds waited."""
        waited = 0.0
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self.paused_until:
                    delay = self.paused_until - now
                else:
                    self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                    self.updated = now
                    if self.tokens >= 1.0:
                        self.tokens -= 1.0
                        return waited
                    delay = (1.0 - self.tokens) / self.rate
                await asyncio.sleep(delay)
                waited += delay

    def pause(self, seconds: float) -> None:
        """A 429 with Retry-After stops every caller sharing this scope, not just the one."""
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)
        self.tokens = 0.0

    def retune(self, per_minute: float, burst: int) -> None:
        """New settings (a reload), same memory: what was spent and any pause stay."""
        now = time.monotonic()
        self.tokens = min(self.tokens + (now - self.updated) * self.rate, self.capacity)
        self.updated = now
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self.tokens = min(self.tokens, self.capacity)

    def wait_ahead(self) -> float:
        """Seconds before the next caller would get a token (0: one is there now)."""
        now = time.monotonic()
        tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        refill = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
        return max(self.paused_until - now, refill)


def credential_scope(secret: str) -> str:
    """A rate-limit scope for "per API key" limits that does not contain the key: two sources
    configured with the same key share one bucket, as they share one limit upstream."""
    return "key:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


class ErrorScheme:
    """How one vendor reports errors. The default reads `{error: {code, message}}` or
    `{error: "CODE", message: "…"}` bodies and classifies by HTTP status alone."""

    def parse(self, status: int, body: Any) -> tuple[str | None, str]:
        """(code, message) from an error answer."""
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                return (str(error.get("code")) if error.get("code") else None,
                        str(error.get("message", "")))
            if isinstance(error, str):
                message = body.get("message")
                return (error, str(message)) if message else (None, error)
        return None, ""

    def body_error(self, body: Any) -> bool:
        """True when a 2xx body is really an error (Aether365's `success: false`)."""
        return False

    def quota(self, code: str | None, message: str) -> bool:
        """True when a 429 is a plan's quota rather than the rate limit (Aether365 answers
        429 for both); the default scheme knows only rate limits."""
        return False

    def kind(self, status: int, code: str | None) -> ErrorKind:
        """What an error means for retrying; a 2xx error body counts as a server error."""
        return _kind_for_status(status) if status >= 400 else "server"


DEFAULT_ERRORS = ErrorScheme()


def _kind_for_status(status: int) -> ErrorKind:
    if status == 401:
        return "auth"
    if status == 403:
        return "forbidden"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server"
    return "client"


def _header_number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def env_proxy(url: str) -> str | None:
    """The proxy `HTTPS_PROXY`/`HTTP_PROXY` name for `url`, unless `NO_PROXY` exempts its host."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def url_path(*segments: str | int) -> str:
    """`/a/b/c` for `get_json`, every segment percent-encoded whole: a vendor id such as
    `../../admin/keys?all=1#` stays one segment of the path it was meant for.

    `.` and `..` cannot be encoded safely (servers and proxies normalise `%2E%2E` back into a
    step up), and an empty segment names no resource; such an id is refused as a schema error.
    """
    encoded: list[str] = []
    for segment in segments:
        text = str(segment)
        if text in ("", ".", ".."):
            raise VendorError("schema", f"an id of {text!r} cannot be used in a URL path")
        encoded.append(urllib.parse.quote(text, safe=""))
    return "/" + "/".join(encoded)


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    """Scheme, host and port (the default port when none is given), as RFC 6454 compares them."""
    return url.scheme, url.host, url.port


def _shown(url: URL) -> str:
    """A URL for an error message: no user info, query or fragment (they may carry tokens)."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytearray
    retry_after: float | None
    location: str | None = None


class VendorClient:
    """JSON GETs against one vendor base URL with one set of credentials."""

    def __init__(
        self,
        *,
        vendor: str,
        base_url: str,
        headers: Mapping[str, str],
        config: HttpConfig,
        limiter: TokenBucket,
        session: aiohttp.ClientSession,
        errors: ErrorScheme = DEFAULT_ERRORS,
    ) -> None:
        self.vendor = vendor
        self.base_url = base_url.rstrip("/")
        # Encoded once; paths are appended already encoded (see `url_path`), never re-parsed,
        # so nothing in them is normalised into a different path.
        self._base = str(URL(self.base_url))
        self._origin = _origin(URL(self.base_url))
        for value in headers.values():  # credentials: never let them reach a log line
            remember(value)
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        # Resolved once: aiohttp's trust_env would re-read the environment (and ~/.netrc, in a
        # thread) on every request, which costs more than the request itself on a fast API.
        self._proxy = config.proxy or env_proxy(self.base_url)
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self.config = config
        self.limiter = limiter
        self._session = session
        self.errors = errors
        self.requests = 0

    async def get_json(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        """GET and decode, retrying what is worth retrying; raises `VendorError` otherwise.

        `path` is appended to the base URL as it is: constant text, or built by `url_path`.
        """
        url = self._url(path)
        cfg = self.config
        last: VendorError | None = None
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                assert last is not None
                delay = last.retry_after
                if delay is None:
                    delay = backoff_delay(attempt - 1, cfg.backoff_initial, cfg.backoff_max)
                log.info("vendor_retry", vendor=self.vendor, path=path, attempt=attempt,
                         delay=round(delay, 3), error=str(last))
                await asyncio.sleep(delay)
            await self._pace()
            try:
                return await self._once(path, url, params)
            except VendorError as exc:
                if exc.kind == "client":
                    # The vendor says our request is malformed: retrying cannot help, and it
                    # is our bug, so say so loudly once instead of looping.
                    log.error("vendor_rejected_request", vendor=self.vendor, path=path,
                              error=str(exc), hint="this is a bug in bridge: please report it "
                              "with this log line")
                if not exc.retryable:
                    raise
                last = exc
        assert last is not None
        raise VendorError(last.kind, f"{last} (gave up after {cfg.max_retries + 1} attempts)",
                          status=last.status, code=last.code)

    def _url(self, path: str) -> URL:
        segments = path.split("/")
        if not path.startswith("/") or "?" in path or "#" in path or any(
                s in (".", "..") for s in segments[1:]):
            raise ValueError(f"{path!r} is not an encoded path: build it with url_path()")
        return URL(self._base + path, encoded=True)

    async def _pace(self) -> None:
        waited = await self.limiter.acquire()
        if waited:
            metrics.RATE_LIMIT_WAIT_SECONDS.labels(self.vendor).inc(waited)
        progress.rate(self.limiter.tokens, self.limiter.rate * 60)

    async def _once(self, path: str, url: URL, params: Mapping[str, str | int] | None) -> Any:
        """One request, with the same-origin redirects it is allowed, decoded and classified."""
        answer = await self._request(path, url, params)
        hops = 0
        while 300 <= answer.status < 400:
            url = self._follow(path, url, answer, hops)
            hops += 1
            await self._pace()  # every hop is a request against the vendor's limit
            answer = await self._request(path, url, None)  # the Location carries its query
        return self._classify(path, answer)

    def _follow_rate_headers(self, path: str, headers: Mapping[str, str]) -> None:
        """`X-RateLimit-Remaining`/`-Reset`, where a vendor sends them (Ayliea does): with
        no request left in the window, every caller of this scope waits for the reset instead
        of spending a request on a 429. The reset is epoch seconds or, if small, a delta."""
        remaining = _header_number(headers.get("X-RateLimit-Remaining"))
        reset = _header_number(headers.get("X-RateLimit-Reset"))
        if remaining is None or reset is None or remaining > 0:
            return
        wait = reset - time.time() if reset > 1e9 else reset
        if wait > 0:
            wait = min(wait, self.config.max_retry_after)
            self.limiter.pause(wait)
            log.debug("vendor_rate_window_spent", vendor=self.vendor, path=path,
                      wait=round(wait, 3))

    def _follow(self, path: str, url: URL, answer: _Answer, hops: int) -> URL:
        """Where a redirect may take us, or the `redirect` error that fails the sweep."""
        where = f"{self.vendor} GET {path}: HTTP {answer.status} redirect"
        try:
            target = url.join(URL(answer.location or ""))
        except ValueError:
            target = None
        if answer.location is None or target is None or target.host is None:
            self._refuse(f"{where} without a usable Location; bridge follows none")
        if _origin(target) != self._origin:
            self._refuse(
                f"{where} to another origin ({_shown(target)}) refused: credentials and answers "
                f"are only accepted from {_shown(URL(self.base_url).origin())}; if the vendor "
                "has moved, update base_url")
        if hops >= self.config.max_redirects:
            self._refuse(f"{where} to {_shown(target)} refused: more than "
                                f"{self.config.max_redirects} redirect(s) (http.max_redirects)")
        log.info("vendor_redirect", vendor=self.vendor, path=path, status=answer.status,
                 to=_shown(target))
        return target

    def _refuse(self, message: str) -> NoReturn:
        metrics.REDIRECTS_REFUSED.labels(self.vendor).inc()
        raise VendorError("redirect", message)

    async def _request(
        self, path: str, url: URL, params: Mapping[str, str | int] | None
    ) -> _Answer:
        self.requests += 1
        try:
            async with self._session.get(
                url, params=params, headers=self._headers, timeout=self._timeout,
                proxy=self._proxy, allow_redirects=False,
            ) as resp:
                status = resp.status
                metrics.child(metrics.API_REQUESTS, self.vendor, str(status)).inc()
                self._follow_rate_headers(path, resp.headers)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if 300 <= status < 400:  # never read: a redirect's body is not the answer
                    return _Answer(status, bytearray(), retry_after,
                                   resp.headers.get("Location"))
                body = await self._read(path, resp)
        except TimeoutError:
            metrics.API_REQUESTS.labels(self.vendor, "timeout").inc()
            raise VendorError("network", f"{self.vendor} GET {path}: timed out after "
                              f"{self.config.timeout:g}s") from None
        except aiohttp.ClientSSLError as exc:
            metrics.API_REQUESTS.labels(self.vendor, "tls").inc()
            raise VendorError("tls", f"{self.vendor} GET {path}: TLS handshake with "
                              f"{self.base_url} failed ({_ssl_reason(exc)}); if the server uses a "
                              "private CA, point http.ca_bundle at its certificate") from None
        except aiohttp.ClientError as exc:
            metrics.API_REQUESTS.labels(self.vendor, "error").inc()
            raise VendorError("network", f"{self.vendor} GET {path}: {type(exc).__name__}: "
                              f"{exc}") from None
        return _Answer(status, body, retry_after)

    async def _read(self, path: str, resp: aiohttp.ClientResponse) -> bytearray:
        """The body, chunk by chunk as aiohttp decompresses it, never more than the cap: the
        wire bytes (a declared or streamed length) and the decoded bytes (a gzip bomb) both
        count. The total timeout covers this too, so a server dripping bytes is cut off."""
        cap = self.config.max_response_bytes
        body = bytearray()
        declared = resp.content_length
        if declared is not None and declared > cap:
            excess = f"declares {declared} bytes, more than"
        else:
            async for chunk in resp.content.iter_any():
                body += chunk
                if resp.content.total_raw_bytes > cap:
                    excess = "sent more bytes on the wire than"
                    break
                if len(body) > cap:
                    excess = "decompressed to more bytes than"
                    break
            else:
                return body
        resp.close()  # drop the connection: the rest of that body is never read
        metrics.RESPONSES_TOO_LARGE.labels(self.vendor).inc()
        raise VendorError("too_large", f"{self.vendor} GET {path}: response {excess} "
                          f"http.max_response_bytes ({cap}) allows; stopped reading",
                          status=resp.status)

    def _classify(self, path: str, answer: _Answer) -> Any:
        status, raw, retry_after = answer.status, answer.body, answer.retry_after
        body: Any = None
        decoded = False
        if raw:
            try:
                result = vendor_json.decode(raw)
            except vendor_json.Undecodable:
                pass
            else:
                body, decoded = result.value, True
                if result.repairs:
                    self._repaired(path, result.repairs)
        else:
            decoded = True
        if status == 429 and decoded:
            code, message = self.errors.parse(status, body)
            if self.errors.quota(code, message):
                raise VendorError("quota", f"{self.vendor} GET {path}: HTTP 429"
                                  + (f" {code}" if code else "") + f": {message or 'quota'}",
                                  status=429, code=code, retry_after=retry_after)
        if status == 429:
            metrics.RATE_LIMITED.labels(self.vendor).inc()
            wait = (None if retry_after is None
                    else min(retry_after, self.config.max_retry_after))
            if wait is not None:
                self.limiter.pause(wait)
            raise VendorError("rate_limited", f"{self.vendor} GET {path}: 429 rate limited",
                              status=429, retry_after=wait)
        if status >= 400 or (decoded and self.errors.body_error(body)):
            code, message = self.errors.parse(status, body)
            where = f"HTTP {status}" if status >= 400 else f"HTTP {status} with an error body"
            kind = self.errors.kind(status, code)
            wait = None
            if retry_after is not None and kind in RETRYABLE_KINDS:  # e.g. 503 + Retry-After
                wait = min(retry_after, self.config.max_retry_after)
                self.limiter.pause(wait)
            raise VendorError(kind, f"{self.vendor} GET {path}: {where}"
                              + (f" {code}" if code else "") + (f": {message}" if message else ""),
                              status=status, code=code, retry_after=wait)
        if not decoded:
            raise VendorError("decode", f"{self.vendor} GET {path}: response is not valid JSON "
                              f"({len(raw)} bytes)", status=status)
        return body

    def _repaired(self, path: str, repairs: frozenset[str]) -> None:
        for repair in repairs:
            metrics.RESPONSES_REPAIRED.labels(self.vendor, repair).inc()
        log.warning("vendor_response_repaired", vendor=self.vendor, path=path,
                    repairs=sorted(repairs),
                    hint="the vendor sent JSON we could only read leniently; affected values "
                         "hold U+FFFD, a number's text, or a marker where nesting was cut")


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, what: str) -> M:
    """Validate a vendor response; a mismatch names the first offending field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        log.warning("vendor_schema_mismatch", what=what, field=where, problem=first["msg"],
                    problems=exc.error_count())
        raise VendorError(
            "schema", f"{what}: unexpected response shape at {where}: {first['msg']} "
            f"({exc.error_count()} problem(s))"
        ) from None


def _ssl_reason(exc: aiohttp.ClientSSLError) -> str:
    """The OpenSSL reason (e.g. "certificate verify failed: self-signed certificate")."""
    cause = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None)
    return describe_tls_error(cause) if cause is not None else type(exc).__name__


@dataclass
class HttpContext:
    """Shared HTTP plumbing for one daemon: sessions per TLS setting and one bucket per scope.

    Two sources that share a rate-limit scope (two ScanOrbit keys of one org) share a bucket.
    A reload builds a new context with the old one's buckets as `inherited`: a scope that still
    exists keeps its bucket (its tokens, a Retry-After pause) under the new settings, because
    the vendor remembers what we spent and a fresh full bucket right after a reload would
    overspend; a scope that is gone leaves its bucket behind.
    """

    sessions: dict[tuple[bool, str], aiohttp.ClientSession] = field(default_factory=dict)
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    inherited: Mapping[str, TokenBucket] = field(default_factory=dict)

    def bucket(self, scope: str, per_minute: float, burst: int) -> TokenBucket:
        if scope not in self.buckets:
            kept = self.inherited.get(scope)
            if kept is not None:
                kept.retune(per_minute, burst)
            self.buckets[scope] = kept or TokenBucket(per_minute, burst)
        return self.buckets[scope]

    def throttled(self) -> dict[str, float]:
        """Scopes whose next request must wait for the rate limit, and for how long."""
        waits = {scope: bucket.wait_ahead() for scope, bucket in self.buckets.items()}
        return {scope: wait for scope, wait in waits.items() if wait > 0}

    def session(self, config: HttpConfig) -> aiohttp.ClientSession:
        key = (config.verify_tls, str(config.ca_bundle or ""))
        if key not in self.sessions:
            tls = client_tls_context(verify=config.verify_tls, ca_bundle=config.ca_bundle)
            connector = aiohttp.TCPConnector(ssl=tls, limit=16)
            self.sessions[key] = aiohttp.ClientSession(connector=connector)
        return self.sessions[key]

    def client(
        self,
        *,
        vendor: str,
        base_url: str,
        headers: Mapping[str, str],
        config: HttpConfig,
        limit_scope: str,
        default_per_minute: float,
        errors: ErrorScheme = DEFAULT_ERRORS,
    ) -> VendorClient:
        per_minute = config.rate_limit_per_minute or default_per_minute
        burst = config.burst or max(1, int(per_minute // 6))
        if not config.verify_tls:
            warn_tls_unverified(vendor, base_url)
        return VendorClient(
            vendor=vendor,
            base_url=base_url,
            headers=headers,
            config=config,
            limiter=self.bucket(f"{vendor}:{limit_scope}", per_minute, burst),
            session=self.session(config),
            errors=errors,
        )

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()
        self.sessions.clear()
