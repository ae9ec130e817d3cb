"""Generic webhook sink: one POST per event (our event JSON, or a body rendered from a
sandboxed template), signed per Standard Webhooks, with the auth a receiver asks for.

Each request carries `webhook-id` (the event id: a receiver drops replays), `webhook-timestamp`
and, with `signing_secrets`, `webhook-signature` (bridge/sinks/http/signing.py). Auth is a
bearer token, HTTP basic auth or any custom headers; mutual TLS through `client_cert`. What
the answers mean and how redirects are treated is the HTTP kit's (bridge/sinks/http/service.py):
2xx delivered, 408/425/429 (and 503 with Retry-After) throttled, other 5xx retried, other 4xx
dead-lettered with an excerpt of the answer.

Digests and storm summaries (bridge/grouping.py) are JSON documents (`"type": "digest"` or
`"storm_summary"`), signed the same way with their own deterministic ids.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import aiohttp
import orjson
from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.components import SecretFields, StrictModel
from bridge.grouping import Digest, StormSummary
from bridge.model import Event
from bridge.secrets import SecretFileError, read_secret_file, remember
from bridge.sinks.http.config import HttpSinkConfig
from bridge.sinks.http.service import Request
from bridge.sinks.http.signing import secret_key, signature
from bridge.sinks.http.sink import HttpSink, RequestBuilder
from bridge.templates import SAMPLES, Template, TemplateError, compile_checked, sample_context


def _signing_secret(secret: SecretStr) -> SecretStr:
    """A `whsec_` secret, remembered for redaction; the error never quotes it."""
    remember(secret.get_secret_value())
    secret_key(secret.get_secret_value())
    return secret


class BasicAuth(SecretFields, StrictModel):
    username: str = Field(min_length=1)
    password: SecretStr  # or password_file


class WebhookSinkConfig(HttpSinkConfig):
    type: Literal["webhook"]
    secret_patterns = (r"whsec_[A-Za-z0-9+/=]{8,}",)
    url: str = Field(pattern=r"^https?://")
    # Sent as `Authorization: Bearer …` when set (use `${ENV}` or `bearer_token_file`).
    bearer_token: SecretStr | None = None
    basic_auth: BasicAuth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # `whsec_…` secrets (Standard Webhooks); several at once while rotating. From the
    # environment (`${WEBHOOK_SECRET}`) or files (`signing_secret_files`, one secret each).
    signing_secrets: list[Annotated[SecretStr, AfterValidator(_signing_secret)]] = Field(
        default_factory=list)
    content_type: str = "application/json"
    # A Jinja2 template of the body (sandboxed, strict); the event's JSON when unset. With a
    # JSON content_type, what it renders for the samples must parse as JSON.
    body_template: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _signing_secret_files(cls, data: Any) -> Any:
        """`signing_secret_files: [a, b]` appends each file's secret to `signing_secrets`."""
        if not isinstance(data, dict) or "signing_secret_files" not in data:
            return data
        data = dict(data)
        files = data.pop("signing_secret_files")
        if not isinstance(files, list):
            raise ValueError("signing_secret_files: a list of file paths")
        secrets = list(data.get("signing_secrets") or [])
        for i, path in enumerate(files):
            try:
                secrets.append(read_secret_file(Path(str(path))))
            except OSError as exc:
                raise ValueError(f"signing_secret_files[{i}]: cannot read {path}: "
                                 f"{exc.strerror}") from None
            except SecretFileError as exc:
                raise ValueError(f"signing_secret_files[{i}]: {exc}") from None
        data["signing_secrets"] = secrets
        return data

    @field_validator("body_template")
    @classmethod
    def _template_renders(cls, source: str | None, info: ValidationInfo) -> str | None:
        if source is None:
            return source
        try:
            template = compile_checked(source, "template")
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        content_type = info.data.get("content_type", "application/json")
        if _is_json(content_type):
            for sample in SAMPLES:
                try:
                    json.loads(template.render_context(sample_context(sample)))
                except json.JSONDecodeError as exc:
                    raise ValueError(
                        f"content_type is {content_type} but the body rendered for a sample "
                        f"{sample.type.value} event is not JSON ({exc.msg} at line "
                        f"{exc.lineno}, column {exc.colno}); use `| tojson` for values, or "
                        "set content_type") from None
        return source

    @model_validator(mode="after")
    def _consistent(self) -> WebhookSinkConfig:
        if self.bearer_token is not None and self.basic_auth is not None:
            raise ValueError("set either bearer_token or basic_auth, not both")
        if (self.bearer_token is not None or self.basic_auth is not None) and any(
                name.lower() == "authorization" for name in self.headers):
            raise ValueError("headers.Authorization and bearer_token/basic_auth both set the "
                             "Authorization header; keep one")
        return self

    def endpoint(self) -> str:
        return self.url

    def templates(self) -> dict[str, str]:
        """Every template of this config by name (what `bridge check-config` lists)."""
        return {} if self.body_template is None else {"body_template": self.body_template}

    def session_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
        if self.basic_auth is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(
                self.basic_auth.username, self.basic_auth.password.get_secret_value())
        return headers

    def request_builder(self) -> WebhookRequests:
        return WebhookRequests(self)

    def build(self) -> WebhookSink:
        return WebhookSink(self)


def _is_json(content_type: str) -> bool:
    main = content_type.split(";")[0].strip().lower()
    return main == "application/json" or main.endswith("+json")


class WebhookRequests(RequestBuilder):
    def __init__(self, config: WebhookSinkConfig) -> None:
        self.keys = [secret_key(s.get_secret_value()) for s in config.signing_secrets]
        self.template = (Template(config.body_template, "body_template")
                         if config.body_template is not None else None)
        self.content_type = config.content_type

    def event(self, event: Event) -> Request:
        body = (self.template.render(event).encode() if self.template is not None
                else event.to_json().encode())
        return self._signed(event.id, body)

    def digest(self, digest: Digest) -> Request:
        document = {"type": "digest", "id": digest.id, "group": dict(digest.group),
                    "group_key": digest.key, "route": digest.route,
                    "count": len(digest.events), "events": [e.to_dict() for e in digest.events]}
        return self._signed(digest.id, _json(document), json_body=True)

    def summary(self, summary: StormSummary) -> Request:
        document = {"type": "storm_summary", "id": summary.id, "sink": summary.sink,
                    "count": len(summary.events), "limit_per_minute": summary.limit,
                    "by_severity": summary.by_severity, "by_source": summary.by_source,
                    "top": [e.to_dict() for e in summary.top],
                    "event_ids": [e.id for e in summary.events]}
        return self._signed(summary.id, _json(document), json_body=True)

    def _signed(self, message_id: str, body: bytes, *, json_body: bool = False) -> Request:
        timestamp = int(time.time())
        headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp)}
        if self.keys:
            headers["webhook-signature"] = signature(self.keys, message_id, timestamp, body)
        if json_body and not _is_json(self.content_type):
            headers["Content-Type"] = "application/json"
        return Request(body, headers)


def _json(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, default=str)


class WebhookSink(HttpSink):
    """The generic webhook: `HttpSink` with the webhook's request builder."""

    def __init__(self, config: WebhookSinkConfig) -> None:
        super().__init__(config)
