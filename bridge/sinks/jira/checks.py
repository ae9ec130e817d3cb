"""The Jira sink's startup checks, one clear log line each: the server (and that it is the
deployment the config says), the sign-in, the project and its issue type, the priority names
of the severity map, and the custom field names (resolved to their ids). The first that fails
raises `StartupCheckFailed`, which makes the sink's destination unavailable: no attempt is
spent, the worker tries again, and /readyz names the check and why."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import structlog

from bridge.sinks.base import DestinationUnavailableError
from bridge.sinks.jira.client import JiraClient, JiraFailure
from bridge.sinks.jira.config import JiraSinkConfig

log = structlog.get_logger(__name__)
T = TypeVar("T")


class StartupCheckFailed(DestinationUnavailableError):
    """A startup check failed: the sink is not ready (its /readyz entry says which check and
    why), spends no attempts, and checks again every `probe_interval`."""


@dataclass(frozen=True, slots=True)
class JiraSetup:
    """What the checks found out, and every create needs: ids, not names (no lookups)."""

    project_id: str
    issue_type_id: str
    field_ids: dict[str, str]  # custom field name -> id


class Checks:
    def __init__(self, config: JiraSinkConfig, client: JiraClient) -> None:
        self.config = config
        self.client = client

    async def run(self) -> JiraSetup:
        cfg, client = self.config, self.client
        info = await self._checked("server", client.server_info())
        deployment = "cloud" if info.get("deploymentType") == "Cloud" else "datacenter"
        if deployment != cfg.deployment:
            self._fail("server", f"{cfg.origin} is Jira {info.get('deploymentType')}, but the "
                                 f"sink says deployment: {cfg.deployment}")
        self._ok("server", f"Jira {info.get('deploymentType')} {info.get('version', '')}")
        me = await self._checked("auth", client.myself())
        self._ok("auth", f"signed in as {me.get('displayName') or me.get('name') or '?'}")
        project = await self._checked("project", client.project(cfg.project))
        types = {str(t.get("name")): str(t.get("id")) for t in project.get("issueTypes") or []}
        if cfg.issue_type not in types:
            self._fail("issue_type", f"project {cfg.project} has no issue type "
                                     f"{cfg.issue_type!r} (it has: {', '.join(sorted(types))})")
        self._ok("project", f"{cfg.project} with issue type {cfg.issue_type}")
        names = set(await self._checked("priorities", client.priorities()))
        missing = sorted({p for p in cfg.priorities.values() if p not in names})
        if missing:
            wrong = ", ".join(f"{s} → {p!r}" for s, p in cfg.priorities.items() if p in missing)
            self._fail("priorities", f"no such priority in Jira: {wrong} (Jira has: "
                                     f"{', '.join(sorted(names))})")
        self._ok("priorities", "every severity maps onto a Jira priority")
        field_ids: dict[str, str] = {}
        if cfg.custom_fields:
            ids = await self._checked("fields", client.fields())
            unknown = sorted(n for n in cfg.custom_fields if n not in ids)
            if unknown:
                self._fail("fields", f"no such field in Jira: {', '.join(unknown)}")
            field_ids = {n: ids[n] for n in cfg.custom_fields}
            self._ok("fields", ", ".join(f"{n} = {i}" for n, i in field_ids.items()))
        return JiraSetup(str(project.get("id")), types[cfg.issue_type], field_ids)

    async def _checked(self, check: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except JiraFailure as failure:
            # A refused sign-in is named as such, whichever request met it first.
            self._fail("auth" if failure.status in (401, 403) else check, str(failure))

    def _ok(self, check: str, detail: str) -> None:
        log.info("jira_check", sink=self.config.name, check=check, ok=True, detail=detail)

    def _fail(self, check: str, detail: str) -> NoReturn:
        log.error("jira_check", sink=self.config.name, check=check, ok=False, detail=detail)
        raise StartupCheckFailed(f"Jira startup check {check} failed: {detail}")

