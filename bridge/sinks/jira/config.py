"""The `type: jira` sink's settings: where Jira is and how to sign in (Cloud: email + API token;
Data Center: a personal access token), what a ticket is made of (project, issue type, the
severity → priority map, labels, templates, custom fields), how the life cycle moves it
(transition names or the workflow's status categories, required transition fields), which
resolutions are a person's decision to respect, and the ledger's search horizon."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.baseline import Baseline
from bridge.durations import parse_duration
from bridge.grouping import check_group_by
from bridge.model import SEVERITIES
from bridge.sinks.base import SinkConfig
from bridge.sinks.http.present import PresetSettings
from bridge.templates import TemplateError, compile_checked

if TYPE_CHECKING:
    from bridge.sinks.jira.service import JiraSink

DEFAULT_PRIORITIES = {"critical": "Highest", "high": "High", "medium": "Medium", "low": "Low",
                      "info": "Lowest"}
DEFAULT_SUMMARY = "[{{ severity | upper }}] {{ title }}"


class JiraSinkConfig(SinkConfig, PresetSettings):
    type: Literal["jira"]
    # A fresh install must not open ten thousand tickets: a scope's first sweep is one
    # summary ticket unless a source or route says otherwise (bridge/baseline.py).
    default_baseline: ClassVar[Baseline] = "summary"
    secret_patterns = (r"ATATT3[A-Za-z0-9_\-=]{20,}",)  # Atlassian Cloud API tokens

    url: str = Field(pattern=r"^https?://")
    deployment: Literal["cloud", "datacenter"] = "cloud"
    # Cloud: the account's email and an API token (id.atlassian.com → Security → API tokens).
    email: str | None = None
    api_token: SecretStr | None = None
    # Data Center: a personal access token (Profile → Personal Access Tokens), sent as Bearer.
    token: SecretStr | None = None

    project: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,254}$")
    issue_type: str = "Task"
    # Our severity → Jira priority name; checked against `GET /priority` at startup.
    priorities: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    update_priority: bool = True  # a `changed` severity moves the ticket's priority too
    labels: list[str] = Field(default_factory=lambda: ["bridge"])
    summary_template: str = DEFAULT_SUMMARY
    # Wiki markup; unset: the built-in description (key fields, console link, dedupe label).
    description_template: str | None = None
    # Custom field *name* (resolved to its id through `GET /field`) → template of its value.
    custom_fields: dict[str, str] = Field(default_factory=dict)

    # Transition names to use; unset: any transition into a status of the done (resolve) or
    # to-do (reopen) category, found per ticket from `GET …/transitions`.
    resolve_transition: str | None = None
    reopen_transition: str | None = None
    # Fields a transition's screen requires, by field id: `resolution: Done` sends
    # `{"resolution": {"name": "Done"}}` (values with allowed values go by name).
    resolve_fields: dict[str, Any] = Field(default_factory=lambda: {"resolution": "Done"})
    # A ticket a person closed with one of these is not reopened: the item is *accepted*.
    human_resolutions: list[str] = Field(
        default_factory=lambda: ["Won't Do", "Won't Fix", "Duplicate"])
    # An accepted item is also recorded as a silence of its `reopened` events, for this long
    # (listed with `bridge silence list`; expire it there to take the decision back). Null:
    # only the Jira sink respects the decision.
    accepted_silence: str | None = "365d"
    # A ticket a person deleted (or moved out of the project) is recreated only if true.
    recreate_missing: bool = False

    # One ticket per group of items with equal values of these event fields (a table of its
    # items); unset: one ticket per item.
    group_by: list[str] | None = None

    # Requests to Jira in flight at once (different items or groups; each is in order).
    concurrency: int = Field(default=4, ge=1, le=64)
    timeout: float = Field(default=30.0, gt=0)
    # A create whose answer was lost is looked for by its label only once the intent is this
    # old (Cloud's search is eventually consistent), and searched for twice before a retry.
    search_horizon: float = Field(default=60.0, ge=0)
    verify_tls: bool = True
    ca_bundle: Path | None = None

    @field_validator("priorities")
    @classmethod
    def _severities(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(SEVERITIES))
        if unknown:
            raise ValueError(f"unknown severities {unknown} (ours: {', '.join(SEVERITIES)})")
        return {**DEFAULT_PRIORITIES, **value}

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for label in value:
            if not label or any(c.isspace() for c in label) or len(label) > 255:
                raise ValueError(f"{label!r}: a Jira label has no spaces and 1 to 255 "
                                 "characters")
        return value

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str] | None) -> list[str] | None:
        return check_group_by(value)

    @field_validator("accepted_silence")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _auth_and_templates(self) -> JiraSinkConfig:
        if self.deployment == "cloud" and (self.email is None or self.api_token is None):
            raise ValueError("Jira Cloud signs in with `email` and `api_token` (or "
                             "api_token_file)")
        if self.deployment == "datacenter" and self.token is None:
            raise ValueError("Jira Data Center signs in with a personal access token: `token` "
                             "(or token_file)")
        for name, source in self.templates().items():
            if name.startswith("console_links."):
                continue  # checked by PresetSettings
            try:
                compile_checked(source, name)
            except TemplateError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"

    def templates(self) -> dict[str, str]:
        found = {**super().templates(), "summary_template": self.summary_template}
        if self.description_template is not None:
            found["description_template"] = self.description_template
        found.update({f"custom_fields.{k}": v for k, v in self.custom_fields.items()})
        return found

    def build(self) -> JiraSink:
        from bridge.sinks.jira.service import JiraSink

        return JiraSink(self)
