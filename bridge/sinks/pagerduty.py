"""PagerDuty Events API v2 (`POST /v2/enqueue`): an alert per item.

`new`, `changed` and `reopened` send `trigger`, `resolved` sends `resolve` (a scope's baseline
summary, bridge/baseline.py, an `info` trigger that pages nobody), all with
`dedup_key` = the item's stable uid: PagerDuty applies every event of an item to the same
alert, and a replay of ours is deduplicated by PagerDuty itself. Severity maps to PagerDuty's
four (critical→critical, high→error, medium→warning, low and info→info). `routing_key` is the
integration's 32-character key (a secret: environment or `routing_key_file`).

Answers (PagerDuty's "Response Codes & Retry Logic"): 202 accepted; 400 invalid event, not
retried: dead-lettered with PagerDuty's `errors`; 429 throttled, retried later without
spending attempts; 5xx retried. A digest is one alert per group (`dedup_key` = the group's key,
resolved when the digest holds only resolutions); a storm summary is one alert per sink.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, SecretStr, field_validator

from bridge.baseline import Baseline
from bridge.grouping import Digest, StormSummary
from bridge.model import SEVERITY_RANK, Event, EventType
from bridge.sinks.http.config import HttpSinkConfig
from bridge.sinks.http.present import (
    Presenter,
    PresetSettings,
    headline,
    is_summary,
    origin,
    truncate,
)
from bridge.sinks.http.service import Request, Response
from bridge.sinks.http.sink import RequestBuilder

SUMMARY_CHARS = 1024  # payload.summary
DEDUP_KEY_CHARS = 255
MAX_LISTED = 100  # events listed in a digest's or summary's custom_details
SEVERITY_MAP = {"critical": "critical", "high": "error", "medium": "warning", "low": "info",
                "info": "info"}


class PagerDutySinkConfig(HttpSinkConfig, PresetSettings):
    type: Literal["pagerduty"]
    # A scope's first sweep arrives as one summary, not as thousands of messages
    # (bridge/baseline.py); a route or source may still say `baseline: deliver`.
    default_baseline: ClassVar[Baseline] = "summary"
    url: str = Field(default="https://events.pagerduty.com/v2/enqueue", pattern=r"^https?://")
    routing_key: SecretStr
    client: str = "bridge"

    @field_validator("routing_key")
    @classmethod
    def _key_shape(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) != 32:
            raise ValueError("a PagerDuty routing key (integration key) has 32 characters")
        return value

    def endpoint(self) -> str:
        return self.url

    def request_builder(self) -> PagerDutyEvents:
        return PagerDutyEvents(self)


class PagerDutyEvents(RequestBuilder):
    def __init__(self, config: PagerDutySinkConfig) -> None:
        self.routing_key = config.routing_key.get_secret_value()
        self.client = config.client
        self.present = Presenter(config)

    def event(self, event: Event) -> Request:
        if event.type is EventType.RESOLVED:
            return self._enqueue("resolve", event.item_uid)
        details: dict[str, Any] = {name: value for name, value in self.present.facts(event)}
        details.update(event_id=event.id, event_type=event.type.value, title=event.title,
                       attributes=dict(event.attributes))
        link = self.present.link(event)
        links = [] if link is None else [{"href": link, "text": f"Open in {event.vendor}"}]
        return self._enqueue("trigger", event.item_uid, {
            "summary": truncate(headline(event), SUMMARY_CHARS),
            "source": origin(event) or event.scope,
            # A baseline summary informs; it must not page someone at install time.
            "severity": "info" if is_summary(event) else SEVERITY_MAP[event.severity],
            "timestamp": event.occurred_at.isoformat(),
            "component": event.kind,
            "group": event.source,
            "class": event.kind,
            "custom_details": details,
        }, links)

    def digest(self, digest: Digest) -> Request:
        key = f"bridge-{digest.key}"
        if all(e.type is EventType.RESOLVED for e in digest.events):
            return self._enqueue("resolve", key)
        worst = digest.worst
        return self._enqueue("trigger", key, {
            "summary": truncate(f"{len(digest.events)} events: {digest.label} (worst: "
                                f"{worst.title})", SUMMARY_CHARS),
            "source": origin(worst) or worst.scope,
            "severity": SEVERITY_MAP[worst.severity],
            "group": worst.source,
            "class": "digest",
            "custom_details": {"digest_id": digest.id, "group": digest.label,
                               "count": len(digest.events),
                               "events": _listing(digest.events)},
        })

    def summary(self, summary: StormSummary) -> Request:
        worst = summary.worst
        return self._enqueue("trigger", f"bridge-storm-{summary.sink}", {
            "summary": truncate(f"Event storm on {summary.sink}: {len(summary.events)} events "
                                f"summarised (over {summary.limit}/minute)", SUMMARY_CHARS),
            "source": "bridge",
            "severity": SEVERITY_MAP[worst.severity],
            "class": "storm summary",
            "custom_details": {"summary_id": summary.id, "count": len(summary.events),
                               "by_severity": summary.by_severity,
                               "by_source": summary.by_source,
                               "most_severe": _listing(summary.top)},
        })

    def _enqueue(self, action: str, dedup_key: str, payload: dict[str, Any] | None = None,
                 links: list[dict[str, str]] | None = None) -> Request:
        body: dict[str, Any] = {"routing_key": self.routing_key, "event_action": action,
                                "dedup_key": dedup_key[:DEDUP_KEY_CHARS]}
        if payload is not None:
            body["payload"] = payload
            body["client"] = self.client
        if links:
            body["links"] = links
        return Request(orjson.dumps(body, default=str))

    def describe(self, response: Response) -> str:
        """PagerDuty's own words: `message` and the `errors` list of a 400."""
        try:
            answer = json.loads(response.body)
        except ValueError:
            return response.excerpt
        if not isinstance(answer, dict):
            return response.excerpt
        errors = answer.get("errors")
        said = [str(answer.get("message") or answer.get("status") or "")]
        if isinstance(errors, list):
            said += [str(e) for e in errors]
        return truncate("; ".join(s for s in said if s), 600) or response.excerpt


def _listing(events: tuple[Event, ...]) -> list[dict[str, Any]]:
    ranked = sorted(events, key=lambda e: -SEVERITY_RANK[e.severity])[:MAX_LISTED]
    return [{"type": e.type.value, "severity": e.severity, "title": truncate(e.title, 300),
             "source": origin(e), "key": e.key, "dedup_key": e.item_uid} for e in ranked]
