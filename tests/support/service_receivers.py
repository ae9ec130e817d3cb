"""Receivers that follow the documented contracts of Slack incoming webhooks, Microsoft Teams
Workflows webhooks and the PagerDuty Events API v2, strictly: a payload that breaks a
documented rule is refused the way the service refuses it, and the rule is recorded in
`violations`, so a preset test fails on any shape the real service would reject.

Each can also be scripted with faults (an answer per request in order: a status, a
Retry-After, a slow answer) for the reliability tests.

Shapes and limits, from the services' documentation:
- Slack: `text` (the notification fallback), `blocks` and/or `attachments` (`color` and their
  own `blocks`); at most 50 blocks; header `plain_text` ≤ 150 characters; section text ≤ 3,000,
  at most 10 fields of ≤ 2,000; context 1 to 10 elements; button text ≤ 75 and url ≤ 3,000.
  Answers 200 `ok`; 400 `invalid_blocks`/`invalid_payload`; 404 `no_service`; 410
  `channel_is_archived`; 429 with Retry-After.
- Teams Workflows: `{"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": AdaptiveCard}]}`;
  Adaptive Card elements and enumerations as in the schema; about 28 KB at most. Answers 202.
- PagerDuty: `routing_key` (32 characters), `event_action` trigger|acknowledge|resolve,
  `dedup_key` ≤ 255 (required to acknowledge or resolve), `payload` with `summary` (≤ 1,024),
  `source`, `severity` critical|error|warning|info (all required to trigger), optional
  `timestamp`, `component`, `group`, `class`, `custom_details`; `links` of {href, text};
  `images`; `client`, `client_url`. 512 KB at most. Answers 202 {"status": "success",
  "message": "Event processed", "dedup_key": …}; 400 {"status": "invalid event", "message":
  "Event object is invalid", "errors": [...]}; 429.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

HEX_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")


@dataclass
class Answer:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow receiver); inf: never


@dataclass
class Hit:
    body: Any
    raw: bytes
    status: int
    at: float


@dataclass
class ServiceReceiver:
    """Common machinery: scripted answers (in order), per-event answers (by the event id the
    payload carries), then the service's own judgement of the payload. With `echo_secret`,
    refusals quote the caller's credential, as careless receivers do."""

    path: str = "/hook"
    script: list[Answer] = field(default_factory=list)
    per_event: dict[str, int] = field(default_factory=dict)
    echo_secret: bool = False
    # While set, every request is answered with this status (an outage: 500, 503, 429 with
    # Retry-After, a 422 refusal); the chaos runs switch it on and off.
    outage: int | None = None
    accepted: list[Any] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    runner: web.AppRunner | None = None
    url: str = ""

    def fail_next(self, *answers: Answer) -> None:
        self.script.extend(answers)

    def validate(self, body: Any) -> list[str]:  # pragma: no cover - each service overrides
        raise NotImplementedError

    def event_id_of(self, body: Any) -> str | None:  # pragma: no cover
        """The event id a single-event payload carries (None for digests and summaries)."""
        raise NotImplementedError

    def secret_of(self, request: web.Request, body: Any) -> str:  # pragma: no cover
        raise NotImplementedError

    def arrived(self) -> list[str]:
        """Ids of the single events accepted, in order."""
        return [i for i in map(self.event_id_of, self.accepted) if i is not None]

    def ok(self, body: Any) -> web.Response:  # pragma: no cover
        raise NotImplementedError

    def refuse(self, problems: list[str]) -> web.Response:  # pragma: no cover
        raise NotImplementedError

    @property
    def port(self) -> int:
        return int(self.url.split(":")[2].split("/")[0]) if self.url else 0

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.outage is not None:
            status = self.outage
            await self._record(Hit(None, raw, status, time.monotonic()))
            headers = {"Retry-After": "1"} if status == 429 else {}
            return web.Response(status=status, text="scripted outage", headers=headers)
        if self.script:
            answer = self.script.pop(0)
            await self._record(Hit(None, raw, answer.status, time.monotonic()))
            if answer.delay:
                await asyncio.sleep(answer.delay)
            return web.Response(status=answer.status, text=answer.body, headers=answer.headers)
        try:
            body = json.loads(raw)
        except ValueError:
            body, problems = None, ["the body is not JSON"]
        else:
            problems = self.validate(body)
        status = self.per_event.get(self.event_id_of(body) or "", 0) if not problems else 0
        if status:
            await self._record(Hit(body, raw, status, time.monotonic()))
            said = f"scripted refusal (credential: {self.secret_of(request, body)})" \
                if self.echo_secret else "scripted refusal"
            return web.Response(status=status, text=said)
        if problems:
            self.violations.extend(problems)
            await self._record(Hit(body, raw, 400, time.monotonic()))
            return self.refuse(problems)
        response = self.ok(body)
        self.accepted.append(body)
        await self._record(Hit(body, raw, response.status, time.monotonic()))
        return response

    async def _record(self, hit: Hit) -> None:
        async with self.changed:
            self.hits.append(hit)
            self.changed.notify_all()

    async def start(self, port: int = 0) -> ServiceReceiver:
        """Listen on `port` (a free one by default; the old one again after `stop`)."""
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(self.path, self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}{self.path}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        async def until() -> None:
            async with self.changed:
                await self.changed.wait_for(predicate)

        await asyncio.wait_for(until(), timeout)


# -- Slack --------------------------------------------------------------------------------------


def _slack_text(obj: Any, where: str, limit: int, types: tuple[str, ...] = (
        "plain_text", "mrkdwn")) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in types:
        return [f"{where}: a text object of type {'/'.join(types)}"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}.text: required"]
    if len(text) > limit:
        return [f"{where}.text: {len(text)} characters, more than {limit}"]
    extra = set(obj) - {"type", "text", "emoji", "verbatim"}
    return [f"{where}: unknown keys {sorted(extra)}"] if extra else []


def slack_block_problems(block: Any, where: str) -> list[str]:
    if not isinstance(block, dict):
        return [f"{where}: a block is an object"]
    kind = block.get("type")
    if kind == "header":
        return _slack_text(block.get("text"), f"{where}.text", 150, ("plain_text",))
    if kind == "divider":
        return []
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            return [f"{where}.elements: 1 to 10 elements"]
        return [p for i, e in enumerate(elements)
                for p in _slack_text(e, f"{where}.elements[{i}]", 3000)]
    if kind == "section":
        problems: list[str] = []
        text, fields = block.get("text"), block.get("fields")
        if text is None and fields is None:
            problems.append(f"{where}: a section needs text or fields")
        if text is not None:
            problems += _slack_text(text, f"{where}.text", 3000)
        if fields is not None:
            if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                problems.append(f"{where}.fields: 1 to 10 fields")
            else:
                problems += [p for i, f in enumerate(fields)
                             for p in _slack_text(f, f"{where}.fields[{i}]", 2000)]
        accessory = block.get("accessory")
        if accessory is not None:
            if not isinstance(accessory, dict) or accessory.get("type") != "button":
                problems.append(f"{where}.accessory: expected a button")
            else:
                problems += _slack_text(accessory.get("text"), f"{where}.accessory.text", 75,
                                        ("plain_text",))
                url = accessory.get("url")
                if not isinstance(url, str) or len(url) > 3000:
                    problems.append(f"{where}.accessory.url: at most 3000 characters")
        extra = set(block) - {"type", "text", "fields", "accessory", "block_id"}
        return problems + ([f"{where}: unknown keys {sorted(extra)}"] if extra else [])
    return [f"{where}.type: unknown block type {kind!r}"]


@dataclass
class SlackReceiver(ServiceReceiver):
    path: str = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"

    def validate(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["the payload is an object"]
        problems: list[str] = []
        extra = set(body) - {"text", "blocks", "attachments", "mrkdwn", "thread_ts",
                             "unfurl_links", "unfurl_media"}
        if extra:
            problems.append(f"unknown keys {sorted(extra)}")
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            problems.append("text: required as the notification fallback when blocks are used")
        elif len(text) > 40_000:
            problems.append("text: more than 40,000 characters")
        blocks = body.get("blocks", [])
        attachments = body.get("attachments", [])
        if not isinstance(blocks, list) or not isinstance(attachments, list):
            return [*problems, "blocks and attachments are lists"]
        for i, attachment in enumerate(attachments):
            where = f"attachments[{i}]"
            if not isinstance(attachment, dict):
                problems.append(f"{where}: an object")
                continue
            colour = attachment.get("color")
            if colour is not None and not (isinstance(colour, str) and (
                    HEX_COLOUR.match(colour) or colour in ("good", "warning", "danger"))):
                problems.append(f"{where}.color: a hex colour or good/warning/danger")
            inner = attachment.get("blocks", [])
            if not isinstance(inner, list) or len(inner) > 50:
                problems.append(f"{where}.blocks: at most 50 blocks")
                continue
            problems += [p for j, b in enumerate(inner)
                         for p in slack_block_problems(b, f"{where}.blocks[{j}]")]
        if len(blocks) > 50:
            problems.append("blocks: at most 50 blocks")
        problems += [p for j, b in enumerate(blocks) for p in slack_block_problems(b, f"blocks[{j}]")]
        return problems

    def ok(self, body: Any) -> web.Response:
        return web.Response(text="ok", content_type="text/plain")

    def event_id_of(self, body: Any) -> str | None:
        """Our Slack messages end with a context line "… · event <id>"."""
        return _id_after("event ", json.dumps(body))

    def secret_of(self, request: web.Request, body: Any) -> str:
        return request.path  # the webhook URL's token is its path

    def refuse(self, problems: list[str]) -> web.Response:
        return web.Response(status=400, text="invalid_blocks", content_type="text/plain")


# -- Microsoft Teams (Workflows) ----------------------------------------------------------------

CARD_ENUMS: dict[str, tuple[str, ...]] = {
    "weight": ("Default", "Lighter", "Bolder"),
    "size": ("Default", "Small", "Medium", "Large", "ExtraLarge"),
    "color": ("Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"),
    "spacing": ("None", "Small", "Default", "Medium", "Large", "ExtraLarge", "Padding"),
    "style": ("default", "emphasis", "good", "attention", "warning", "accent"),
}
CARD_ELEMENT_KEYS: dict[str, set[str]] = {
    "TextBlock": {"type", "text", "wrap", "weight", "size", "color", "isSubtle", "spacing",
                  "maxLines", "horizontalAlignment", "separator", "id"},
    "Container": {"type", "items", "style", "spacing", "separator", "bleed", "id"},
    "FactSet": {"type", "facts", "spacing", "separator", "id"},
}


def card_element_problems(element: Any, where: str) -> list[str]:
    if not isinstance(element, dict) or element.get("type") not in CARD_ELEMENT_KEYS:
        return [f"{where}: an element of type {'/'.join(CARD_ELEMENT_KEYS)}"]
    kind = element["type"]
    problems = [f"{where}.{k}: unknown property" for k in set(element) - CARD_ELEMENT_KEYS[kind]]
    for name, allowed in CARD_ENUMS.items():
        if name in element and element[name] not in allowed:
            problems.append(f"{where}.{name}: {element[name]!r} is not one of {allowed}")
    if kind == "TextBlock" and not isinstance(element.get("text"), str):
        problems.append(f"{where}.text: required")
    if kind == "Container":
        items = element.get("items")
        if not isinstance(items, list) or not items:
            problems.append(f"{where}.items: a non-empty list")
        else:
            problems += [p for i, e in enumerate(items)
                         for p in card_element_problems(e, f"{where}.items[{i}]")]
    if kind == "FactSet":
        facts = element.get("facts")
        if not isinstance(facts, list) or not facts or not all(
                isinstance(f, dict) and set(f) == {"title", "value"}
                and all(isinstance(v, str) for v in f.values()) for f in facts):
            problems.append(f"{where}.facts: a non-empty list of {{title, value}} strings")
    return problems


@dataclass
class TeamsReceiver(ServiceReceiver):
    path: str = "/workflows/abc/triggers/manual/paths/invoke"
    max_bytes: int = 28 * 1024

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self.max_bytes:
            self.violations.append(f"message of {request.content_length} bytes")
            return web.json_response({"error": {"code": "RequestEntityTooLarge"}}, status=413)
        return await super().handle(request)

    def validate(self, body: Any) -> list[str]:
        if not isinstance(body, dict) or body.get("type") != "message":
            return ['the envelope is {"type": "message", "attachments": [...]}']
        attachments = body.get("attachments")
        if not isinstance(attachments, list) or len(attachments) != 1:
            return ["attachments: exactly one Adaptive Card"]
        (attachment,) = attachments
        if not isinstance(attachment, dict) or attachment.get("contentType") != \
                "application/vnd.microsoft.card.adaptive" or "content" not in attachment:
            return ["attachments[0]: contentType application/vnd.microsoft.card.adaptive "
                    "with the card in content"]
        if attachment.get("contentUrl") is not None:
            return ["attachments[0].contentUrl: null for an inline card"]
        card = attachment["content"]
        if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
            return ["content.type: AdaptiveCard"]
        problems: list[str] = []
        if card.get("version") not in ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5"):
            problems.append(f"content.version: {card.get('version')!r} (Teams renders ≤ 1.5)")
        schema = card.get("$schema")
        if schema is not None and schema != "http://adaptivecards.io/schemas/adaptive-card.json":
            problems.append("content.$schema: the Adaptive Card schema")
        extra = set(card) - {"$schema", "type", "version", "body", "actions", "msteams"}
        problems += [f"content.{k}: unknown property" for k in sorted(extra)]
        elements = card.get("body")
        if not isinstance(elements, list) or not elements:
            problems.append("content.body: a non-empty list")
        else:
            problems += [p for i, e in enumerate(elements)
                         for p in card_element_problems(e, f"content.body[{i}]")]
        for i, action in enumerate(card.get("actions", [])):
            if not (isinstance(action, dict) and action.get("type") == "Action.OpenUrl"
                    and isinstance(action.get("url"), str) and isinstance(action.get("title"), str)):
                problems.append(f"content.actions[{i}]: Action.OpenUrl with title and url")
        return problems

    def ok(self, body: Any) -> web.Response:
        return web.Response(status=202)

    def event_id_of(self, body: Any) -> str | None:
        return _id_after("event ", json.dumps(body))

    def secret_of(self, request: web.Request, body: Any) -> str:
        return request.path_qs

    def refuse(self, problems: list[str]) -> web.Response:
        return web.json_response({"error": {"code": "InvalidRequestContent",
                                            "message": "; ".join(problems)}}, status=400)


# -- PagerDuty Events API v2 ---------------------------------------------------------------------


@dataclass
class PagerDutyReceiver(ServiceReceiver):
    path: str = "/v2/enqueue"
    routing_key: str = "R0123456789abcdef0123456789abcde"  # fake test key
    # dedup_key -> "triggered" | "resolved", and how many events each got
    alerts: dict[str, str] = field(default_factory=dict)
    events_per_alert: dict[str, int] = field(default_factory=dict)

    def validate(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["the event is an object"]
        problems: list[str] = []
        extra = set(body) - {"routing_key", "event_action", "dedup_key", "payload", "images",
                             "links", "client", "client_url"}
        problems += [f"'{k}' is not a valid property" for k in sorted(extra)]
        key = body.get("routing_key")
        if not isinstance(key, str) or len(key) != 32:
            problems.append("Length of 'routing_key' is incorrect (should be 32 characters)")
        elif key != self.routing_key:
            problems.append("Invalid routing key")
        action = body.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            problems.append("'event_action' is invalid (must be one of: trigger, acknowledge, "
                            "resolve)")
        dedup = body.get("dedup_key")
        if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
            problems.append("'dedup_key' must be a string of at most 255 characters")
        if action in ("acknowledge", "resolve") and dedup is None:
            problems.append("'dedup_key' is required for acknowledge and resolve")
        payload = body.get("payload")
        if action == "trigger":
            problems += self._payload_problems(payload)
        for i, link in enumerate(body.get("links", [])):
            if not isinstance(link, dict) or not isinstance(link.get("href"), str) or \
                    set(link) - {"href", "text"}:
                problems.append(f"links[{i}]: {{href, text}}")
        if len(json.dumps(body)) > 512 * 1024:
            problems.append("the event is larger than 512 KB")
        return problems

    @staticmethod
    def _payload_problems(payload: Any) -> list[str]:
        if not isinstance(payload, dict):
            return ["'payload' is required for trigger events"]
        problems: list[str] = []
        extra = set(payload) - {"summary", "source", "severity", "timestamp", "component",
                                "group", "class", "custom_details"}
        problems += [f"'payload.{k}' is not a valid property" for k in sorted(extra)]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary:
            problems.append("'payload.summary' is missing or blank")
        elif len(summary) > 1024:
            problems.append("'payload.summary' is longer than 1024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            problems.append("'payload.source' is missing or blank")
        if payload.get("severity") not in ("critical", "error", "warning", "info"):
            problems.append("'payload.severity' is invalid (must be one of: critical, error, "
                            "warning, info)")
        if "timestamp" in payload:
            try:
                datetime.fromisoformat(str(payload["timestamp"]))
            except ValueError:
                problems.append("'payload.timestamp' is not ISO 8601")
        for name in ("component", "group", "class"):
            if name in payload and not isinstance(payload[name], str):
                problems.append(f"'payload.{name}' must be a string")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            problems.append("'payload.custom_details' must be an object")
        return problems

    def ok(self, body: Any) -> web.Response:
        dedup = str(body.get("dedup_key"))
        if body["event_action"] == "trigger":
            self.alerts[dedup] = "triggered"
        elif body["event_action"] == "resolve" and dedup in self.alerts:
            self.alerts[dedup] = "resolved"
        self.events_per_alert[dedup] = self.events_per_alert.get(dedup, 0) + 1
        return web.json_response({"status": "success", "message": "Event processed",
                                  "dedup_key": dedup}, status=202)

    def refuse(self, problems: list[str]) -> web.Response:
        return web.json_response({"status": "invalid event", "message": "Event object is invalid",
                                  "errors": problems}, status=400)

    def event_id_of(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return None
        details = (body.get("payload") or {}).get("custom_details") or {}
        found = details.get("event_id") if isinstance(details, dict) else None
        return found if isinstance(found, str) else None

    def secret_of(self, request: web.Request, body: Any) -> str:
        return str(body.get("routing_key", "")) if isinstance(body, dict) else ""


EVENT_ID = re.compile(r"[0-9a-f]{32}")


def _id_after(marker: str, text: str) -> str | None:
    at = text.rfind(marker)
    found = EVENT_ID.match(text, at + len(marker)) if at >= 0 else None
    return found.group(0) if found else None
