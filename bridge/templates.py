"""Operator-written templates (a webhook body, a console link, a Jira summary): Jinja2 in a
sandbox, strict about names, checked when the config is loaded.

The environment is `ImmutableSandboxedEnvironment`: a template can read the event but not call
into Python internals or change what it reads, because template text is config that a tenant
admin may write, and the event it reads is vendor data. `StrictUndefined` makes a misspelt name
an error instead of an empty string, and `check` renders every template against a sample event
of each kind (new, changed, resolved, reopened) while the config loads, so a typo fails
`bridge check-config` and the daemon's start, not the delivery at 3 a.m.

What a template sees: every field of the event's JSON shape (`title`, `severity`, `type`,
`attributes`, `raw`, `changes`, `item_uid`…) by name, and the whole of it as `event`. Which keys
`attributes` and `raw` hold depends on the vendor and the item kind, so the check cannot judge
them: in the samples any key reads as a placeholder. Use `attributes.x | default("")` for a key
some events lack; at delivery a missing one is an error that dead-letters that event (replay it
after fixing the template).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.model import Event, EventType

# Rendered text is bounded: a template looping over a large `raw` must not build megabytes.
MAX_RENDERED_CHARS = 1_000_000

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                     keep_trailing_newline=False)


def _json_default(value: object) -> object:
    """`| tojson` of an undefined name says which name, like every other use of it."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_ENV.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": _json_default}


class TemplateError(ValueError):
    """A template that does not compile or does not render; the message says where and why,
    and never quotes event data (it may be sensitive)."""


class Template:
    """A compiled template, named for its messages (`body_template`, `console_links.scanorbit`)."""

    def __init__(self, source: str, name: str) -> None:
        self.source = source
        self.name = name
        try:
            self._compiled = _ENV.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{name}: line {exc.lineno}: {exc.message}") from None

    def render(self, event: Event) -> str:
        return self.render_context(context(event))

    def render_context(self, values: Mapping[str, Any]) -> str:
        try:
            text = self._compiled.render(values)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{self.name}: {exc.message}") from None
        except jinja2.TemplateError as exc:  # sandbox refusals, filter errors
            raise TemplateError(f"{self.name}: {type(exc).__name__}: {exc.message}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateError(f"{self.name}: {type(exc).__name__} while rendering") from None
        if len(text) > MAX_RENDERED_CHARS:
            raise TemplateError(f"{self.name}: rendered more than {MAX_RENDERED_CHARS:,} "
                                "characters")
        return text

    def check(self) -> list[str]:
        """Problems rendering against a sample of each event type (empty when fine), each
        naming the sample types it happened with."""
        problems: dict[str, list[str]] = {}
        for sample in SAMPLES:
            try:
                self.render_context(sample_context(sample))
            except TemplateError as exc:
                problems.setdefault(str(exc), []).append(sample.type.value)
        return [f"{problem} (rendering a sample {'/'.join(types)} event)"
                for problem, types in problems.items()]


def compile_checked(source: str, name: str) -> Template:
    """Compile and render against every sample; raises one TemplateError naming each problem
    (what a config validator calls, so the YAML path is added to it)."""
    template = Template(source, name)
    problems = template.check()
    if problems:
        raise TemplateError("; ".join(problems))
    return template


def templates_of(component: object) -> dict[str, str]:
    """The templates a component's config holds, by setting name (a config model with a
    `templates()` method: the webhook's body, the presets' console links, Jira's fields)."""
    found = getattr(component, "templates", None)
    return dict(found()) if callable(found) else {}


def check_all(templates: Mapping[str, str]) -> list[str]:
    """Compile and render every template against every sample: the problems, or none."""
    problems: list[str] = []
    for name, source in templates.items():
        try:
            problems += Template(source, name).check()
        except TemplateError as exc:
            problems.append(str(exc))
    return problems


def context(event: Event) -> dict[str, Any]:
    values = event.to_dict()
    values["event"] = dict(values)
    return values


class _SampleFields(dict[str, Any]):
    """A sample's `attributes`/`raw`: whatever key a template reads exists (vendor-dependent)."""

    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def sample_context(event: Event) -> dict[str, Any]:
    values = context(event)
    values["attributes"] = _SampleFields(values["attributes"])
    values["raw"] = _SampleFields(values["raw"])
    values["event"] = {**values["event"], "attributes": values["attributes"],
                       "raw": values["raw"]}
    return values


def _sample(type_: EventType, counter: int, **extra: Any) -> Event:
    return Event(
        id=f"sample-{type_.value}", type=type_, source="scanorbit", vendor="scanorbit",
        scope="scanorbit", tenant="acme", kind="finding", key="F-0001",
        title="S3 bucket prod-logs is publicly readable", severity="high",
        occurred_at=datetime(2026, 1, 1, 12, 0, tzinfo=UTC), counter=counter,
        vendor_severity="HIGH", status="open",
        attributes={"region": "eu-west-1", "account": "123456789012"},
        raw={"id": "F-0001", "severity": "HIGH", "status": "OPEN"}, **extra)


SAMPLES: tuple[Event, ...] = (
    _sample(EventType.NEW, 1),
    _sample(EventType.CHANGED, 2, changes={"severity": ("medium", "high")}),
    _sample(EventType.RESOLVED, 3, reason="vendor status resolved"),
    _sample(EventType.REOPENED, 4, reason="active again"),
)
