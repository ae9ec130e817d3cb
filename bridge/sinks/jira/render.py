"""What a ticket says, in Jira wiki markup (REST v2 takes it in both deployments): the summary
and description from the operator's sandboxed templates (bridge/templates.py) or the built-in
ones, the table of a group's items, and the comments each life-cycle step leaves.

Vendor text is data, not markup: every value placed in a table cell or a sentence here is
escaped, so a finding titled `x|y [evil|https://…]` cannot add columns or links. An operator's
own template is trusted as markup (it is config), but the values it reads are the event's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge.model import SEVERITY_RANK, Event, EventType
from bridge.sinks.http.present import Presenter, origin, truncate
from bridge.sinks.jira.config import JiraSinkConfig
from bridge.templates import Template

SUMMARY_CHARS = 255
DESCRIPTION_CHARS = 32_000  # Jira's text fields hold 32,767
COMMENT_CHARS = 32_000
_SPECIAL = re.compile(r"([\\|\[\]{}*_^~+\-?#!])")


def wiki(value: object) -> str:
    """`value` as literal text in wiki markup: specials escaped, one line."""
    text = " ".join(str(value).split())
    return _SPECIAL.sub(r"\\\1", text)


def one_line(text: str, limit: int) -> str:
    return truncate(" ".join(text.split()), limit)


class Renderer:
    """A sink config's templates, compiled once."""

    def __init__(self, config: JiraSinkConfig) -> None:
        self.config = config
        self.present = Presenter(config)
        self.summary_template = Template(config.summary_template, "summary_template")
        self.description_template = (Template(config.description_template,
                                              "description_template")
                                     if config.description_template else None)
        self.custom = {name: Template(source, f"custom_fields.{name}")
                       for name, source in config.custom_fields.items()}

    def summary(self, event: Event) -> str:
        return one_line(self.summary_template.render(event), SUMMARY_CHARS) or event.key

    def description(self, event: Event, label: str) -> str:
        if self.description_template is not None:
            return truncate(self.description_template.render(event), DESCRIPTION_CHARS)
        lines = [f"h3. {wiki(event.title)}", "", "||Field||Value||"]
        lines += [f"|{wiki(name)}|{wiki(value)}|" for name, value in self.present.facts(event)]
        lines += [f"|{wiki(name)}|{wiki(value)}|"
                  for name, value in sorted(event.attributes.items()) if value not in (None, "")]
        lines.append(f"|Source|{wiki(origin(event) or event.scope)}|")
        link = self.present.link(event)
        if link is not None:
            lines += ["", f"[Open in {wiki(event.vendor)}|{link}]"]
        lines += ["", f"_Opened by bridge (event {event.id}). The label {label} ties this "
                      "ticket to the item: keep it._"]
        return truncate("\n".join(lines), DESCRIPTION_CHARS)

    def custom_values(self, event: Event) -> dict[str, Any]:
        """Custom field name → rendered value (a number when it reads as one)."""
        out: dict[str, Any] = {}
        for name, template in self.custom.items():
            text = template.render(event).strip()
            try:
                out[name] = int(text)
            except ValueError:
                try:
                    out[name] = float(text)
                except ValueError:
                    out[name] = text
        return out

    # -- comments

    def changed(self, event: Event) -> str:
        lines = ["*Changed* at the vendor:"]
        lines += [f"* {wiki(name)}: {wiki(old)} → {wiki(new)}"
                  for name, (old, new) in event.changes.items()]
        return self._finish(lines, event)

    def resolved(self, event: Event, *, last_of: int | None = None) -> str:
        why = event.reason or "the vendor reports it resolved"
        lines = [f"*Resolved*: {wiki(why)}."]
        if last_of is not None:
            lines.append(f"{wiki(event.title)} was the last active item of {last_of}.")
        return self._finish(lines, event)

    def reopened(self, event: Event) -> str:
        why = event.reason or "the vendor reports it active again"
        return self._finish([f"*Reopened*: {wiki(why)}."], event)

    def accepted(self, event: Event, resolution: str, by: str) -> str:
        who = f" by {wiki(by)}" if by else ""
        return self._finish([
            f"The vendor reports this active again ({wiki(event.reason or event.type.value)}), "
            f"but it was closed as *{wiki(resolution)}*{who}: not reopened. bridge records the "
            "item as accepted and tells Jira nothing more about it until its tracked fields "
            "change."], event)

    def changed_after_acceptance(self, event: Event, resolution: str) -> str:
        lines = [f"Closed as *{wiki(resolution)}*, but the item has changed since; reopened "
                 "for a new look:"]
        lines += [f"* {wiki(name)}: {wiki(old)} → {wiki(new)}"
                  for name, (old, new) in event.changes.items()]
        return self._finish(lines, event)

    def item_joined(self, event: Event) -> str:
        verb = "returned" if event.type is EventType.REOPENED else "joined"
        return self._finish([f"Item {verb}: *{wiki(event.title)}* ({wiki(event.severity)})."],
                            event)

    def item_resolved(self, event: Event, active: int) -> str:
        why = event.reason or "resolved at the vendor"
        return self._finish([f"Item resolved: *{wiki(event.title)}* ({wiki(why)}); {active} "
                             "still active."], event)

    def item_changed(self, event: Event) -> str:
        lines = [f"Item changed: *{wiki(event.title)}*"]
        lines += [f"* {wiki(name)}: {wiki(old)} → {wiki(new)}"
                  for name, (old, new) in event.changes.items()]
        return self._finish(lines, event)

    def _finish(self, lines: list[str], event: Event) -> str:
        """The comment with its console link, and the bridge event it tells (so an operator
        can follow an event from its sweep to the ticket)."""
        link = self.present.link(event)
        if link is not None:
            lines.append(f"[Open in {wiki(event.vendor)}|{link}]")
        lines.append(f"{{color:#97a0af}}bridge event {event.id}{{color}}")
        return truncate("\n".join(lines), COMMENT_CHARS)

    # -- groups

    def group_summary(self, values: Mapping[str, object], event: Event) -> str:
        told = " / ".join(str(v) for v in values.values() if v not in (None, ""))
        return one_line(f"[bridge] {told or event.kind}", SUMMARY_CHARS)

    def group_description(self, values: Mapping[str, object],
                          items: Mapping[str, Mapping[str, Any]], label: str,
                          event: Event) -> str:
        lines = ["h3. " + wiki(" / ".join(f"{k} = {v}" for k, v in values.items())), "",
                 "||Item||Severity||Kind||Key||State||"]
        ranked = sorted(items.values(), key=lambda i: (i.get("state") != "active",
                                                       -SEVERITY_RANK.get(i.get("severity", ""),
                                                                          0),
                                                       str(i.get("title"))))
        for row in ranked:
            title = wiki(row.get("title", ""))
            link = row.get("link")
            cell = f"[{title}|{link}]" if link else title
            lines.append(f"|{cell}|{wiki(row.get('severity', ''))}|{wiki(row.get('kind', ''))}|"
                         f"{wiki(row.get('key', ''))}|{wiki(row.get('state', ''))}|")
        lines += ["", f"_Kept by bridge (last: event {event.id}). The label {label} ties this "
                      "ticket to the group: keep it._"]
        return truncate("\n".join(lines), DESCRIPTION_CHARS)
