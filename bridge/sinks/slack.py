"""Slack incoming webhook: one Block Kit message per event, digests and storm summaries as one
message each.

The layout: an attachment coloured by severity (green when resolved) holding a header (the
headline), a section with the title, where it came from and a button to the vendor's console,
a section of key fields, and a context line with the event id. The top-level `text` is the
notification's plain-text fallback.

Slack refuses a message that breaks a Block Kit limit (`invalid_blocks`), so every text is cut to
its limit with "…" and a digest lists as many events as fit in 50 blocks, then says how many
more there were: a message is shortened, never rejected. Limits (Slack's Block Kit reference):
header text 150 characters, section text 3,000, 10 fields of 2,000, 10 context elements, button
text 75 and URL 3,000, 50 blocks per message. A 429 carries `Retry-After` (incoming webhooks
allow about one message a second): throttled, retried then, spending no attempts. A 404
`no_service` or 410 `channel_is_archived` is a refusal (dead-lettered).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from bridge.grouping import Digest, StormSummary
from bridge.model import Event, EventType
from bridge.sinks.chat import ChatPresetConfig
from bridge.sinks.http.present import (
    COLOURS,
    RESOLVED_COLOUR,
    Presenter,
    colour,
    headline,
    origin,
    truncate,
)
from bridge.sinks.http.service import Request, Response
from bridge.sinks.http.sink import RequestBuilder

HEADER_CHARS = 150
SECTION_CHARS = 3000
FIELD_CHARS = 2000
MAX_FIELDS = 10
MAX_BLOCKS = 50
BUTTON_TEXT_CHARS = 75
URL_CHARS = 3000
TEXT_CHARS = 3000  # the notification text; Slack cuts far later (40,000), people far sooner


class SlackSinkConfig(ChatPresetConfig):
    type: Literal["slack"]
    secret_patterns = (r"https://hooks\.slack\.com/services/[A-Za-z0-9_/\-]+",)
    url_hint = "Slack: Incoming Webhooks → Webhook URL"

    def request_builder(self) -> SlackMessages:
        return SlackMessages(self)


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(text, limit), "emoji": True}


def _mrkdwn(text: str, limit: int = SECTION_CHARS) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": truncate(text, limit)}


def escape(text: str) -> str:
    """Slack's three control characters in message text (vendor text must not form links or
    mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackMessages(RequestBuilder):
    def __init__(self, config: SlackSinkConfig) -> None:
        self.present = Presenter(config)

    def event(self, event: Event) -> Request:
        blocks: list[dict[str, Any]] = [{"type": "header",
                                         "text": _plain(headline(event), HEADER_CHARS)}]
        summary: dict[str, Any] = {
            "type": "section",
            "text": _mrkdwn(f"*{escape(event.title)}*\n{escape(origin(event))}")}
        link = self.present.link(event)
        if link is not None and len(link) <= URL_CHARS:
            summary["accessory"] = {"type": "button", "url": link,
                                    "text": _plain("Open in console", BUTTON_TEXT_CHARS)}
        blocks.append(summary)
        facts = self.present.facts(event)
        if facts:
            blocks.append({"type": "section", "fields": [
                _mrkdwn(f"*{escape(name)}*\n{escape(value)}", FIELD_CHARS)
                for name, value in facts[:MAX_FIELDS]]})
        blocks.append({"type": "context", "elements": [
            _mrkdwn(f"{event.type.value} · {event.occurred_at.isoformat(timespec='seconds')}"
                    f" · event {event.id}")]})
        return _message(headline(event), colour(event), blocks)

    def digest(self, digest: Digest) -> Request:
        events = digest.events
        resolved = all(e.type is EventType.RESOLVED for e in events)
        title = f"{len(events)} events: {digest.label}"
        blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain(title, HEADER_CHARS)}]
        blocks += self._listing(events, room=MAX_BLOCKS - len(blocks) - 1)
        blocks.append({"type": "context", "elements": [_mrkdwn(f"digest {digest.id}")]})
        return _message(title, RESOLVED_COLOUR if resolved else COLOURS[digest.worst.severity],
                        blocks)

    def summary(self, summary: StormSummary) -> Request:
        title = (f"⚠️ Event storm: {len(summary.events)} events summarised "
                 f"(over {summary.limit}/minute)")
        counts = [_mrkdwn(f"*{name.upper()}*\n{n}", FIELD_CHARS)
                  for name, n in summary.by_severity.items()]
        counts += [_mrkdwn(f"*{escape(name)}*\n{n}", FIELD_CHARS)
                   for name, n in summary.by_source.items()]
        blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain(title, HEADER_CHARS)},
                                        {"type": "section", "fields": counts[:MAX_FIELDS]},
                                        {"type": "section", "text": _mrkdwn("*Most severe:*")}]
        blocks += self._listing(summary.top, room=MAX_BLOCKS - len(blocks) - 1,
                                total=len(summary.events))
        blocks.append({"type": "context", "elements": [_mrkdwn(
            f"Every summarised event is listed by `{summary.listing}`")]})
        return _message(title, COLOURS[summary.worst.severity], blocks)

    def _listing(self, events: tuple[Event, ...], room: int,
                 total: int | None = None) -> list[dict[str, Any]]:
        """One line per event, packed into sections of at most 3,000 characters and `room`
        blocks; what does not fit is counted in a last line."""
        lines = [self._line(e) for e in events]
        total = len(events) if total is None else total
        blocks: list[dict[str, Any]] = []
        chunk: list[str] = []
        shown = 0
        for line in lines:
            if chunk and len("\n".join([*chunk, line])) > SECTION_CHARS:
                if len(blocks) + 2 > room:  # keep one block for "… and N more"
                    break
                blocks.append({"type": "section", "text": _mrkdwn("\n".join(chunk))})
                chunk = []
            chunk.append(line)
            shown += 1
        if chunk:
            blocks.append({"type": "section", "text": _mrkdwn("\n".join(chunk))})
        if shown < total:
            blocks.append({"type": "context", "elements": [
                _mrkdwn(f"… and {total - shown} more")]})
        return blocks

    def _line(self, event: Event) -> str:
        title = escape(truncate(event.title, 200))
        link = self.present.link(event)
        shown = f"<{link}|{title}>" if link and "|" not in link and ">" not in link else title
        mark = "✅ " if event.type is EventType.RESOLVED else ""
        return truncate(f"• {mark}*{event.severity.upper()}* {shown} · "
                        f"{escape(origin(event))} · {event.type.value}", 600)

    def describe(self, response: Response) -> str:
        return f"Slack said {response.excerpt!r}" if response.excerpt else ""


def _message(text: str, hex_colour: str, blocks: list[dict[str, Any]]) -> Request:
    # The fallback `text` is mrkdwn (vendor text in it must not mention or link); plain_text
    # objects (the header) are shown as they are.
    payload = {"text": truncate(escape(text), TEXT_CHARS),
               "attachments": [{"color": hex_colour, "blocks": blocks[:MAX_BLOCKS]}]}
    return Request(orjson.dumps(payload))
