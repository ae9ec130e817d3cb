"""Microsoft Teams through a Workflows webhook ("When a Teams webhook request is received"):
an Adaptive Card inside the message envelope Workflows expects,

    {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                         "contentUrl": null, "content": <AdaptiveCard>}]}

Workflows posts Adaptive Cards only (not the old connectors' MessageCard) and answers 202
Accepted. The card: a coloured container with the headline (resolved in green, marked
"✅ RESOLVED"), the title and where it came from, a FactSet of key fields, and an
`Action.OpenUrl` to the vendor's console. Teams refuses messages over about 28 KB, so a digest
lists as many events as fit and counts the rest, and long texts are cut with "…".
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from bridge.grouping import Digest, StormSummary
from bridge.model import SEVERITY_RANK, Event, EventType
from bridge.sinks.chat import ChatPresetConfig
from bridge.sinks.http.present import Presenter, headline, origin, truncate
from bridge.sinks.http.service import Request
from bridge.sinks.http.sink import RequestBuilder

CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
MAX_MESSAGE_BYTES = 27 * 1024  # Teams: about 28 KB per message; keep a margin
TEXT_CHARS = 2000
# Adaptive Card colours by severity (TextBlock `color`) and container styles.
TEXT_COLOUR = {"critical": "Attention", "high": "Attention", "medium": "Warning",
               "low": "Accent", "info": "Default"}
STYLE = {"critical": "attention", "high": "attention", "medium": "warning", "low": "accent",
         "info": "emphasis"}


class TeamsSinkConfig(ChatPresetConfig):
    type: Literal["teams"]
    # The workflow's URL carries its signature (`sig=`): a credential.
    secret_patterns = (r"sig=[A-Za-z0-9%_\-]{16,}",)
    url_hint = "Teams: Workflows → 'When a Teams webhook request is received' → HTTP POST URL"

    def request_builder(self) -> TeamsCards:
        return TeamsCards(self)


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": truncate(text, TEXT_CHARS), "wrap": True, **style}


def _banner(text: str, severity: str, resolved: bool) -> dict[str, Any]:
    return {"type": "Container", "style": "good" if resolved else STYLE[severity],
            "items": [_text(text, weight="Bolder", size="Medium",
                            color="Good" if resolved else TEXT_COLOUR[severity])]}


class TeamsCards(RequestBuilder):
    def __init__(self, config: TeamsSinkConfig) -> None:
        self.present = Presenter(config)

    def event(self, event: Event) -> Request:
        resolved = event.type is EventType.RESOLVED
        body = [_banner(headline(event), event.severity, resolved),
                _text(event.title, weight="Bolder"),
                _text(origin(event), isSubtle=True, spacing="None")]
        facts = self.present.facts(event)
        if facts:
            body.append({"type": "FactSet", "facts": [
                {"title": truncate(name, 100), "value": truncate(value, 500)}
                for name, value in facts]})
        body.append(_text(f"event {event.id}", isSubtle=True, size="Small"))
        return _card(body, self._actions(event))

    def digest(self, digest: Digest) -> Request:
        resolved = all(e.type is EventType.RESOLVED for e in digest.events)
        head = [_banner(f"{len(digest.events)} events: {digest.label}",
                        digest.worst.severity, resolved)]
        return self._fitted(head, digest.events, len(digest.events), f"digest {digest.id}")

    def summary(self, summary: StormSummary) -> Request:
        counts = [{"title": name.upper(), "value": str(n)}
                  for name, n in summary.by_severity.items()]
        counts += [{"title": truncate(name, 100), "value": str(n)}
                   for name, n in summary.by_source.items()]
        head = [_banner(f"⚠️ Event storm: {len(summary.events)} events summarised (over "
                        f"{summary.limit}/minute)", summary.worst.severity, False),
                {"type": "FactSet", "facts": counts},
                _text("Most severe:", weight="Bolder")]
        return self._fitted(head, summary.top, len(summary.events),
                            f"Every summarised event is listed by `{summary.listing}`")

    def _fitted(self, head: list[dict[str, Any]], events: tuple[Event, ...], total: int,
                footer: str) -> Request:
        """As many event lines as fit in a Teams message, then "… and N more"."""
        lines = [self._line(e) for e in events]
        shown = len(lines)
        while True:
            body = [*head, *lines[:shown]]
            if shown < total:
                body.append(_text(f"… and {total - shown} more", isSubtle=True))
            body.append(_text(footer, isSubtle=True, size="Small"))
            request = _card(body, [])
            if len(request.body) <= MAX_MESSAGE_BYTES or shown == 0:
                return request
            shown = max(0, shown - max(1, shown // 4))

    def _line(self, event: Event) -> dict[str, Any]:
        mark = "✅ " if event.type is EventType.RESOLVED else ""
        title = truncate(event.title, 200)
        link = self.present.link(event)
        shown = f"[{title}]({link})" if link and ")" not in link else title
        return _text(f"{mark}**{event.severity.upper()}** {shown} · {origin(event)} · "
                     f"{event.type.value}", spacing="Small",
                     color="Good" if mark else TEXT_COLOUR[event.severity]
                     if SEVERITY_RANK[event.severity] >= SEVERITY_RANK["medium"] else "Default")

    def _actions(self, event: Event) -> list[dict[str, Any]]:
        link = self.present.link(event)
        return [] if link is None else [{"type": "Action.OpenUrl", "title": "Open in console",
                                         "url": link}]


def _card(body: list[dict[str, Any]], actions: list[dict[str, Any]]) -> Request:
    card: dict[str, Any] = {"$schema": CARD_SCHEMA, "type": "AdaptiveCard",
                            "version": CARD_VERSION, "body": body, "msteams": {"width": "Full"}}
    if actions:
        card["actions"] = actions
    envelope = {"type": "message", "attachments": [
        {"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}]}
    return Request(orjson.dumps(envelope))
