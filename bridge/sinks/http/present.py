"""What the human-facing presets (Slack, Teams, PagerDuty) show about an event, decided once:
the headline, the severity colour, where it came from, the key fields, the link to the vendor's
console. Each preset only lays these out in its own format.

Console links are operator templates (bridge/templates.py), keyed by source name or vendor,
because the vendors' APIs return no console URL and only the operator knows their tenant's:
`console_links: {scanorbit: "https://console.scanorbit.cloud/findings/{{ key | urlencode }}"}`.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field, field_validator

from bridge.grouping import GROUPABLE
from bridge.model import Event, EventType
from bridge.templates import Template, TemplateError, compile_checked

ELLIPSIS = "…"

# Colours by severity; resolved events are green whatever their severity.
COLOURS: Mapping[str, str] = {"critical": "#8B0000", "high": "#D9480F", "medium": "#F59F00",
                              "low": "#1C7ED6", "info": "#868E96"}
RESOLVED_COLOUR = "#2B8A3E"
EMOJI: Mapping[str, str] = {"critical": "🟥", "high": "🟧", "medium": "🟨", "low": "🟦",
                            "info": "⬜"}
ACTIONS: Mapping[EventType, str] = {EventType.NEW: "New", EventType.CHANGED: "Changed",
                                    EventType.RESOLVED: "✅ RESOLVED",
                                    EventType.REOPENED: "Reopened"}
LABELS: Mapping[str, str] = {"vendor_severity": "Vendor severity", "kind": "Kind",
                             "key": "Key", "status": "Status", "tenant": "Tenant",
                             "source": "Source", "severity": "Severity", "scope": "Scope",
                             "vendor": "Vendor", "type": "Event", "title": "Title"}


def truncate(text: str, limit: int) -> str:
    """`text` within `limit` characters, ending in "…" when cut."""
    return text if len(text) <= limit else text[:max(0, limit - 1)] + ELLIPSIS


def colour(event: Event) -> str:
    return RESOLVED_COLOUR if event.type is EventType.RESOLVED else COLOURS[event.severity]


def is_summary(event: Event) -> bool:
    """A scope's baseline told in one event (bridge/baseline.py), not one item's transition."""
    return event.type is EventType.SUMMARY


def headline(event: Event) -> str:
    """e.g. "🟧 New HIGH finding: S3 bucket prod-logs is publicly readable"."""
    marker = "" if event.type is EventType.RESOLVED else f"{EMOJI[event.severity]} "
    if is_summary(event):
        return f"{marker}{event.title}"
    action = ACTIONS.get(event.type, event.type.value.capitalize())
    return f"{marker}{action} {event.severity.upper()} {event.kind}: {event.title}"


def origin(event: Event) -> str:
    """Source and tenant: "scanorbit / acme"."""
    return " / ".join(p for p in (event.source, event.tenant) if p)


def label(name: str) -> str:
    return LABELS.get(name, name.removeprefix("attributes."))


class PresetSettings(BaseModel):
    """Settings of every human-facing preset."""

    # Source name or vendor -> URL template of the item in the vendor's console.
    console_links: dict[str, str] = Field(default_factory=dict)
    # Event fields shown as key facts, in order (empty values are left out).
    fields: list[str] = Field(default_factory=lambda: [
        "severity", "vendor_severity", "status", "kind", "key", "tenant"])

    @field_validator("console_links")
    @classmethod
    def _links_render(cls, links: dict[str, str]) -> dict[str, str]:
        for name, source in links.items():
            try:
                compile_checked(source, f"console_links.{name}")
            except TemplateError as exc:
                raise ValueError(str(exc)) from None
        return links

    @field_validator("fields")
    @classmethod
    def _known_fact_fields(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in GROUPABLE and not name.startswith("attributes."):
                raise ValueError(f"unknown event field {name!r} (known: "
                                 f"{', '.join(sorted(GROUPABLE))}, attributes.<name>)")
        return names

    def templates(self) -> dict[str, str]:
        """Every template of this config by name (what `bridge check-config` lists)."""
        return {f"console_links.{k}": v for k, v in self.console_links.items()}


class Presenter:
    """A preset config's presentation choices, compiled once per sink."""

    def __init__(self, settings: PresetSettings) -> None:
        self.fields = list(settings.fields)
        self._links = {k: Template(v, f"console_links.{k}")
                       for k, v in settings.console_links.items()}

    def link(self, event: Event) -> str | None:
        """The console URL of the event's item, or None when not configured (or when this
        event cannot render it: a message without a link beats no message)."""
        template = self._links.get(event.source) or self._links.get(event.vendor)
        if template is None:
            return None
        try:
            url = template.render(event).strip()
        except TemplateError:
            return None
        return url if url.startswith(("https://", "http://")) else None

    def facts(self, event: Event) -> list[tuple[str, str]]:
        """(label, value) of the key fields that have a value, then what changed; for a
        baseline summary, its counts."""
        if is_summary(event):
            counts = [(name.replace("_", " ").capitalize(), str(value))
                      for name, value in event.attributes.items() if value]
            return [("Source", origin(event)), *counts, ("Reason", event.reason)]
        facts = [(label(name), str(value)) for name in self.fields
                 if (value := event.field_value(name)) not in (None, "")]
        facts += [(f"Changed {label(name)}", f"{old} → {new}")
                  for name, (old, new) in event.changes.items()]
        if event.reason:
            facts.append(("Reason", event.reason))
        return facts
