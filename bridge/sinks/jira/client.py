"""Jira's REST API through the `jira` package, with the care it needs.

- **No retries inside the package** (`max_retries=0`): its session re-sends a request after a
  dropped connection or a 429/503, and a re-sent `POST /issue` whose first copy was committed
  is a duplicate ticket. The outbox worker owns retries; the ledger (ledger.py) makes a lost
  create answer safe.
- **Off the event loop**: the package is blocking (requests), so every call runs on a thread
  pool of `concurrency` threads; the event loop only awaits.
- **Few requests**: project and issue type go by id (the package would look each up by name on
  every create), creates are not re-read (`prefetch=False`), transitions go by id.
- **Errors in Jira's words, never the package's**: a `JIRAError`'s text includes the request
  headers, the Authorization header among them. `JiraFailure` carries the status, the
  `errorMessages`/`errors` Jira answered and `Retry-After`, and nothing else.

Create, comment, update and transition go through REST v2, which Cloud and Data Center both
serve (and which takes wiki markup); the label search uses Cloud's `/rest/api/3/search/jql`
(paged by `nextPageToken`; the old `/search` answers 410 there) or Data Center's
`/rest/api/2/search` (paged by `startAt`). The package's `enhanced_search_issues` knows
`search/jql` but builds it under the client's REST version (2, chosen for wiki markup), so the
search goes through the package's own session and error handling (`_get_json`) with the v3
base: one client, one auth, one place where errors are read.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from jira import JIRA, JIRAError
from requests.adapters import HTTPAdapter

from bridge.net import USER_AGENT, parse_retry_after
from bridge.sinks.jira.config import JiraSinkConfig

T = TypeVar("T")
MAX_SAID = 300  # characters of Jira's answer quoted in an error
SEARCH_PAGE = 100


class JiraFailure(Exception):
    """A request Jira answered with an error, or that got no answer (`status` None)."""

    def __init__(self, doing: str, status: int | None, said: str,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{doing}: " + (f"HTTP {status}: {said}" if status else said))
        self.doing = doing
        self.status = status
        self.said = said
        self.retry_after = retry_after

    @property
    def missing(self) -> bool:
        return self.status == 404


def jira_words(response: requests.Response | None) -> str:
    """Jira's `errorMessages` and `errors` (field: message), or the start of the body."""
    if response is None:
        return "no answer"
    try:
        body = response.json()
    except ValueError:
        return response.text[:MAX_SAID] or response.reason or ""
    said: list[str] = []
    if isinstance(body, dict):
        said += [str(m) for m in body.get("errorMessages") or []]
        errors = body.get("errors")
        if isinstance(errors, dict):
            said += [f"{k}: {v}" for k, v in errors.items()]
        if not said and body.get("message"):
            said.append(str(body["message"]))
    text = "; ".join(said) or response.text
    return text[:MAX_SAID]


def _failure(doing: str, exc: Exception) -> JiraFailure:
    if isinstance(exc, JIRAError):
        response = exc.response if isinstance(exc.response, requests.Response) else None
        retry = parse_retry_after(response.headers.get("Retry-After")) if response is not None \
            else None
        return JiraFailure(doing, exc.status_code, jira_words(response), retry)
    if isinstance(exc, requests.TooManyRedirects):
        return JiraFailure(doing, None, "Jira answered with a redirect, and the sink follows "
                                        "none (the credentials must not travel): check `url`")
    if isinstance(exc, requests.RequestException):
        return JiraFailure(doing, None, f"{type(exc).__name__}: no answer from Jira")
    raise exc


@dataclass(frozen=True, slots=True)
class Transition:
    id: str
    name: str
    category: str  # the target status's statusCategory key: new, indeterminate, done
    fields: dict[str, Any]  # the screen's fields, by id, as `expand=transitions.fields` says


@dataclass(frozen=True, slots=True)
class IssueState:
    key: str
    project: str
    category: str
    status: str
    resolution: str | None
    transitions: tuple[Transition, ...] = ()


class JiraClient:
    """The calls the sink makes, each awaitable, each one request (but `search_label`)."""

    def __init__(self, config: JiraSinkConfig) -> None:
        self.config = config
        self.cloud = config.deployment == "cloud"
        verify: bool | str = str(config.ca_bundle) if config.ca_bundle else config.verify_tls
        auth: dict[str, Any] = {}
        if self.cloud:
            assert config.email is not None and config.api_token is not None
            auth["basic_auth"] = (config.email, config.api_token.get_secret_value())
        else:
            assert config.token is not None
            auth["token_auth"] = config.token.get_secret_value()
        # Nothing is requested here (no server info, no validation): startup checks do that,
        # each naming what failed.
        self.jira = JIRA(server=config.url, options={"verify": verify, "rest_api_version": "2",
                                                      "headers": {"User-Agent": USER_AGENT}},
                         max_retries=0, get_server_info=False, validate=False,
                         timeout=config.timeout, **auth)
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=config.concurrency,
                              max_retries=0)
        self.jira._session.mount("https://", adapter)
        self.jira._session.mount("http://", adapter)
        self.jira._session.max_redirects = 0  # never follow one (the kit's rule for sinks)
        self._pool = ThreadPoolExecutor(max_workers=config.concurrency,
                                        thread_name_prefix=f"jira-{config.name}")
        self._server = config.url.rstrip("/")

    async def _call(self, doing: str, fn: Callable[[], T]) -> T:
        def run() -> T:
            try:
                return fn()
            except (JIRAError, requests.RequestException) as exc:
                raise _failure(doing, exc) from None

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.jira.close()  # type: ignore[no-untyped-call]

    # -- startup checks

    async def server_info(self) -> dict[str, Any]:
        return await self._call("serverInfo", functools.partial(
            self.jira._get_json, "serverInfo"))

    async def myself(self) -> dict[str, Any]:
        return await self._call("myself", self.jira.myself)

    async def project(self, key: str) -> dict[str, Any]:
        return await self._call(f"project {key}", functools.partial(
            self.jira._get_json, f"project/{key}"))

    async def priorities(self) -> list[str]:
        found = await self._call("priority", functools.partial(self.jira._get_json, "priority"))
        return [str(p.get("name")) for p in found if isinstance(p, dict)]

    async def fields(self) -> dict[str, str]:
        """Field name → id (what `custom_fields` names are resolved through)."""
        found = await self._call("field", self.jira.fields)
        return {str(f["name"]): str(f["id"]) for f in found if isinstance(f, dict)}

    # -- tickets

    async def create(self, fields: dict[str, Any]) -> tuple[str, str]:
        """(id, key) of the new issue."""
        issue = await self._call("create issue", functools.partial(
            self.jira.create_issue, fields=fields, prefetch=False))
        return str(issue.id), str(issue.key)

    async def comment(self, key: str, body: str) -> None:
        await self._call(f"comment on {key}", functools.partial(
            self.jira.add_comment, key, body))

    async def update(self, key: str, fields: dict[str, Any]) -> None:
        url = self.jira._get_url(f"issue/{key}")
        await self._call(f"update {key}", functools.partial(
            self.jira._session.put, url, json={"fields": fields}))

    async def state(self, key: str) -> IssueState:
        """Status, resolution and the transitions available now (one request)."""
        raw = await self._call(f"get {key}", functools.partial(
            self.jira._get_json, f"issue/{key}",
            params={"fields": "status,resolution,project", "expand": "transitions.fields"}))
        fields = raw.get("fields") or {}
        status = fields.get("status") or {}
        resolution = fields.get("resolution") or {}
        return IssueState(
            key=str(raw.get("key")), project=str((fields.get("project") or {}).get("key")),
            category=str((status.get("statusCategory") or {}).get("key")),
            status=str(status.get("name")), resolution=resolution.get("name"),
            transitions=tuple(
                Transition(str(t.get("id")), str(t.get("name")),
                           str(((t.get("to") or {}).get("statusCategory") or {}).get("key")),
                           dict(t.get("fields") or {}))
                for t in raw.get("transitions") or []))

    async def transition(self, key: str, transition_id: str, fields: dict[str, Any],
                         comment: str) -> None:
        """Move the ticket and say why, in one request (the comment rides on the transition)."""
        await self._call(f"transition {key}", functools.partial(
            self.jira.transition_issue, key, transition_id, fields=fields or None,
            comment=comment))

    async def closed_by(self, key: str) -> str:
        """Who last set the ticket's resolution (its changelog), or "" when not found."""
        raw = await self._call(f"changelog of {key}", functools.partial(
            self.jira._get_json, f"issue/{key}", params={"fields": "resolution",
                                                          "expand": "changelog"}))
        for history in reversed((raw.get("changelog") or {}).get("histories") or []):
            if any(i.get("field") == "resolution" for i in history.get("items") or []):
                return str((history.get("author") or {}).get("displayName") or "")
        return ""

    async def search_label(self, label: str) -> list[str]:
        """Keys of every issue carrying `label` in the project, all pages."""
        jql = f'labels = "{label}" AND project = "{self.config.project}"'
        return await self._call(f"search {label}", functools.partial(self._search, jql))

    def _search(self, jql: str) -> list[str]:
        keys: list[str] = []
        if self.cloud:
            base = "{server}/rest/api/3/{path}"
            token: str | None = None
            while True:
                params: dict[str, Any] = {"jql": jql, "fields": "labels",
                                          "maxResults": SEARCH_PAGE}
                if token:
                    params["nextPageToken"] = token
                page = self.jira._get_json("search/jql", params=params, base=base)
                keys += [str(i["key"]) for i in page.get("issues") or []]
                token = page.get("nextPageToken")
                if not token or page.get("isLast"):
                    return keys
        start = 0
        while True:
            page = self.jira._get_json("search", params={
                "jql": jql, "fields": "labels", "startAt": start, "maxResults": SEARCH_PAGE})
            found = [str(i["key"]) for i in page.get("issues") or []]
            keys += found
            start += len(found)
            if not found or start >= int(page.get("total", 0)):
                return keys
