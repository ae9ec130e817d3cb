"""What a chat preset (Slack, Teams) configures beyond the HTTP kit: a webhook URL that is
itself the credential, one message at a time, a storm guard on by default, and a scope's first
sweep told as one summary. Each preset names its own URL hint and secret pattern."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from bridge.baseline import Baseline
from bridge.sinks.http.config import HttpSinkConfig, secret_url
from bridge.sinks.http.present import PresetSettings


class ChatPresetConfig(HttpSinkConfig, PresetSettings):
    # A scope's first sweep arrives as one summary, not as thousands of messages
    # (bridge/baseline.py); a route or source may still say `baseline: deliver`.
    default_baseline: ClassVar[Baseline] = "summary"
    # Where in the service the URL is found, for the error that says it is not one.
    url_hint: ClassVar[str] = "the webhook URL"
    # The webhook's URL is its credential: from the environment or `webhook_url_file`.
    webhook_url: SecretStr
    # One message at a time keeps the channel in order and within the service's pace.
    concurrency: int = Field(default=1, ge=1, le=256)
    max_events_per_minute: int | None = Field(default=60, ge=1)

    @field_validator("webhook_url")
    @classmethod
    def _is_url(cls, value: SecretStr) -> SecretStr:
        return secret_url(value, cls.url_hint)

    def endpoint(self) -> str:
        return self.webhook_url.get_secret_value()
