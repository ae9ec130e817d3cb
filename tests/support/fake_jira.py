"""A strict fake of the Jira REST API, in Cloud and Data Center modes, for the Jira sink's tests
and benchmark. It answers like Jira does (shapes from Atlassian's REST v2/v3 reference) and
records anything a real Jira would refuse in `violations`, so a test fails on a request shape
that only a lenient fake would take.

What it serves (REST v2 in both modes, and v3 where Cloud needs it):
- `serverInfo` (`deploymentType` "Cloud" or "Server"), `myself`, `field`, `priority`,
  `project/{key}` with its issue types;
- `issue` create / get / update, `issue/{key}/comment`, `issue/{key}/transitions` (GET with
  `expand=transitions.fields`, POST) over a workflow To Do (new) → In Progress
  (indeterminate) → Done (done) whose Done transition requires a `resolution` from the
  allowed list; entering To Do clears the resolution, as Jira's reopen post-functions do;
- JQL search on labels (`labels = "x" [AND project = KEY]`): Cloud `/rest/api/3/search/jql`
  paged by `nextPageToken` (with `isLast`), and `/search` answering 410 Gone as Cloud does
  now; Data Center `/rest/api/2/search` paged by `startAt`. The search index lags creates by
  `search_lag` seconds (Cloud's search is only eventually consistent).

Auth: Cloud takes Basic email:API-token, Data Center a Bearer personal access token; anything
else is a 401. Errors have Jira's body `{"errorMessages": [...], "errors": {field: msg}}`.

Faults: `throttle` (429 + Retry-After), `fail` (a status for the next requests), `answers`
(a status for writes whose body contains a string, e.g. an event id),
`drop_creates` (commit the create, then drop the connection without answering), `hold_creates`
(commit the create, then answer only once `release()` is called: the window in which a test
kills the bridge), `latency` per request. People: `close_as` (a person resolves a ticket with
a resolution), `delete`, `move`.

Run standalone for the benchmark: `python -m tests.support.fake_jira --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import functools
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Mode = Literal["cloud", "datacenter"]

STATUSES: dict[str, tuple[str, str]] = {  # status name -> (status id, statusCategory key)
    "To Do": ("10000", "new"),
    "In Progress": ("3", "indeterminate"),
    "Done": ("10001", "done"),
}
CATEGORY_NAMES = {"new": "To Do", "indeterminate": "In Progress", "done": "Done"}
# (transition id, name, target status); every transition is available from the other statuses.
TRANSITIONS = (("11", "Back to To Do", "To Do"), ("21", "Start", "In Progress"),
               ("31", "Close", "Done"))
RESOLUTIONS = ("Done", "Won't Do", "Won't Fix", "Duplicate", "Cannot Reproduce")
PRIORITIES = ("Highest", "High", "Medium", "Low", "Lowest")
SYSTEM_FIELDS = ("summary", "description", "project", "issuetype", "priority", "labels")
LABEL = re.compile(r"^\S{1,255}$")
JQL = re.compile(r'^labels\s*=\s*"?([^"\s]+)"?(?:\s+AND\s+project\s*=\s*"?([A-Z][A-Z0-9_]*)"?)?$')


def jira_error(status: int, messages: list[str] | None = None,
               errors: dict[str, str] | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errorMessages": messages or [], "errors": errors or {}},
                             status=status, headers=headers)


@dataclass
class FakeIssue:
    id: int
    key: str
    project: str
    fields: dict[str, Any]
    created: float
    status: str = "To Do"
    resolution: str | None = None
    comments: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return list(self.fields.get("labels") or [])

    @property
    def category(self) -> str:
        return STATUSES[self.status][1]


IssueRoute = Callable[["FakeJira", web.Request, FakeIssue], Awaitable[web.Response]]


def on_issue(route: IssueRoute) -> Callable[[FakeJira, web.Request], Awaitable[web.Response]]:
    """A route under `issue/{key}` gets the ticket its path names (by its new key after a move),
    or the caller gets Jira's 404, which says the same whether the ticket does not exist or the
    caller may not see it."""

    @functools.wraps(route)
    async def answer(self: FakeJira, request: web.Request) -> web.Response:
        issue = self._lookup(request.match_info["key"])
        if issue is None:
            return jira_error(404, ["Issue does not exist or you do not have permission to "
                                    "see it."])
        return await route(self, request, issue)

    return answer


@dataclass
class FakeJira:
    mode: Mode = "cloud"
    project: str = "SEC"
    issue_types: tuple[str, ...] = ("Task", "Bug")
    email: str = "bot@example.com"
    token: str = "jira-test-token-0123456789"
    priorities: tuple[str, ...] = PRIORITIES
    custom_fields: dict[str, str] = field(default_factory=lambda: {"Risk Score": "customfield_10100"})
    search_lag: float = 0.0
    page_cap: int = 50  # the most issues one search page holds (Jira: 100 on Cloud's /search/jql)
    latency: float = 0.0
    # Faults, consumed in order.
    throttle: list[float] = field(default_factory=list)  # Retry-After of the next 429s
    fail: list[int] = field(default_factory=list)  # statuses for the next requests
    drop_creates: int = 0
    hold_creates: bool = False
    # While set, every request is answered with this status (the chaos runs' outages; a 429
    # says Retry-After: 1).
    outage: int | None = None
    # While set, every request is redirected there (a proxy's login page, a moved site).
    redirect: str | None = None
    # A write whose body contains one of these strings is answered with its status (400:
    # Jira's field error; 5xx: its server error), quoting the caller's credential in the
    # answer when `echo_auth`, as careless services do.
    answers: dict[str, int] = field(default_factory=dict)
    echo_auth: bool = False
    # Every accepted write that carries text (create, comment, transition comment), in order:
    # (issue key, text).
    journal: list[tuple[str, str]] = field(default_factory=list)

    issues: dict[str, FakeIssue] = field(default_factory=dict)
    moved: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    requests: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""
    _next_id: int = 10000
    _next_number: int = 1
    _held: asyncio.Event = field(default_factory=asyncio.Event)
    created_while_held: int = 0

    # -- what tests read and do

    def sink_settings(self) -> dict[str, Any]:
        """What a Jira sink's config needs to reach this fake: its URL, deployment, project
        and the credential of its mode (Cloud: email and API token; Data Center: a personal
        access token), kept here so the tests do not each repeat which goes with which."""
        auth = ({"email": self.email, "api_token": self.token} if self.mode == "cloud"
                else {"token": self.token})
        return {"url": self.url, "deployment": self.mode, "project": self.project, **auth}

    def tickets(self, label: str | None = None) -> list[FakeIssue]:
        return [i for i in self.issues.values() if label is None or label in i.labels]

    def ticket(self, label: str) -> FakeIssue:
        found = self.tickets(label)
        assert len(found) == 1, f"{len(found)} tickets carry {label}"
        return found[0]

    def close_as(self, key: str, resolution: str, by: str = "Alice Example") -> None:
        """A person resolves the ticket (what the bridge must then respect)."""
        issue = self.issues[key]
        self._move_to(issue, "Done", resolution, by)

    def delete(self, key: str) -> None:
        self.issues.pop(key)
        self.deleted.add(key)

    def move(self, key: str, project: str) -> str:
        """A person moves the ticket to another project: it gets a new key there."""
        issue = self.issues.pop(key)
        issue.key, issue.project = f"{project}-{issue.id}", project
        self.issues[issue.key] = issue
        self.moved[key] = issue.key
        return issue.key

    def release(self) -> None:
        """Let held creates answer (see `hold_creates`)."""
        self.hold_creates = False
        self._held.set()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    def count(self, route: str) -> int:
        return self.requests[route]

    # -- server

    async def start(self, port: int = 0) -> FakeJira:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        for v in ("2", "3"):
            base = f"/rest/api/{v}"
            r.add_get(f"{base}/serverInfo", self._server_info)
            r.add_get(f"{base}/myself", self._myself)
            r.add_get(f"{base}/field", self._fields)
            r.add_get(f"{base}/priority", self._priorities)
            r.add_get(base + "/project/{key}", self._project)
            r.add_post(f"{base}/issue", self._create)
            r.add_get(base + "/issue/{key}", self._get_issue)
            r.add_put(base + "/issue/{key}", self._update)
            r.add_get(base + "/issue/{key}/transitions", self._transitions)
            r.add_post(base + "/issue/{key}/transitions", self._transition)
            r.add_post(base + "/issue/{key}/comment", self._comment)
            r.add_get(f"{base}/search", self._search)
            r.add_post(f"{base}/search", self._search)
            r.add_get(f"{base}/search/jql", self._search_jql)
            r.add_post(f"{base}/search/jql", self._search_jql)
        app.router.add_get("/_fake/stats", self._stats)  # not Jira's: for the benchmark
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        self._held.set()
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await self._handle(request, handler)
        except ConnectionResetError:
            # The client died mid-request (the chaos driver kills bridge at any moment): no one
            # reads this answer, and aiohttp would log the reset as a server error.
            return web.Response(status=499)

    async def _handle(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = f"{request.method} {route.canonical if route is not None else request.path}"
        self.requests[name] = self.requests.get(name, 0) + 1
        if request.path.startswith("/_fake/"):
            response: web.StreamResponse = await handler(request)
            return response
        if self.latency:
            await asyncio.sleep(self.latency)
        # serverInfo answers anonymous callers too, as Jira does; everything else wants auth.
        if not request.path.endswith("/serverInfo") and not self._authenticated(request):
            return jira_error(401, ["You are not authenticated. Authentication required to "
                                    "perform this operation."])
        if self.redirect is not None:
            raise web.HTTPFound(self.redirect)
        if self.outage is not None:
            return jira_error(self.outage, [f"Scripted outage ({self.outage})."],
                              headers={"Retry-After": "1"} if self.outage == 429 else None)
        if self.throttle:
            return jira_error(429, ["Rate limit exceeded."],
                              headers={"Retry-After": f"{self.throttle.pop(0):g}"})
        if self.fail:
            status = self.fail.pop(0)
            return jira_error(status, [f"Internal server error ({status})."])
        if request.path.startswith("/rest/api/3/") and not (
                self.mode == "cloud" and request.path.startswith("/rest/api/3/search")):
            # REST v3 takes descriptions and comments in ADF; the sink speaks v2 (wiki markup)
            # for everything but Cloud's search, so anything else here is a mistake of ours.
            self.violations.append(f"{request.method} {request.path}: REST v3 is only used "
                                   "for Cloud's search")
        if self.answers and request.method in ("POST", "PUT"):
            raw = (await request.read()).decode(errors="replace")
            for marker, status in self.answers.items():
                if marker in raw:
                    said = f"Refused (credential: {self._credential(request)})" \
                        if self.echo_auth else "Refused."
                    if status >= 500:
                        return jira_error(status, [said])
                    return jira_error(status, [], {"description": said})
        response = await handler(request)
        return response

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": dict(self.requests), "tickets": len(self.issues),
                                  "labels": len({x for i in self.issues.values()
                                                 for x in i.labels}),
                                  "violations": self.violations})

    def _credential(self, request: web.Request) -> str:
        given = request.headers.get("Authorization", "")
        if given.startswith("Basic "):
            return base64.b64decode(given[6:]).decode(errors="replace")
        return given

    def _authenticated(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        if self.mode == "datacenter":
            return given == f"Bearer {self.token}"
        if not given.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(given[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{self.email}:{self.token}"

    async def _json(self, request: web.Request) -> Any:
        if request.content_type != "application/json":
            self.violations.append(f"{request.method} {request.path}: Content-Type "
                                   f"{request.content_type!r}, not application/json")
        try:
            return json.loads(await request.read())
        except ValueError:
            return None

    # -- metadata

    async def _server_info(self, request: web.Request) -> web.Response:
        cloud = self.mode == "cloud"
        return web.json_response({
            "baseUrl": self.url, "version": "1001.0.0-SNAPSHOT" if cloud else "9.12.4",
            "versionNumbers": [1001, 0, 0] if cloud else [9, 12, 4],
            "deploymentType": "Cloud" if cloud else "Server", "buildNumber": 100261,
            "serverTitle": "Jira"})

    async def _myself(self, request: web.Request) -> web.Response:
        if self.mode == "cloud":
            return web.json_response({"accountId": "5b10a2844c20165700ede21g",
                                      "emailAddress": self.email, "displayName": "bridge bot",
                                      "active": True})
        return web.json_response({"name": "bridge", "key": "JIRAUSER10100",
                                  "displayName": "bridge bot", "active": True})

    async def _fields(self, request: web.Request) -> web.Response:
        system = [{"id": f, "key": f, "name": f.title(), "custom": False,
                   "clauseNames": [f]} for f in SYSTEM_FIELDS]
        custom = [{"id": fid, "key": fid, "name": name, "custom": True,
                   "clauseNames": [f"cf[{fid.split('_')[1]}]", name],
                   "schema": {"type": "number", "custom": "float"}}
                  for name, fid in self.custom_fields.items()]
        return web.json_response(system + custom)

    async def _priorities(self, request: web.Request) -> web.Response:
        return web.json_response([{"id": str(i + 1), "name": name, "self": ""}
                                  for i, name in enumerate(self.priorities)])

    async def _project(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key != self.project:
            return jira_error(404, [f"No project could be found with key '{key}'."])
        return web.json_response({
            "id": "10000", "key": self.project, "name": "Security",
            "issueTypes": [{"id": str(10001 + i), "name": n, "subtask": False}
                           for i, n in enumerate(self.issue_types)]})

    # -- issues

    def _lookup(self, key: str) -> FakeIssue | None:
        key = self.moved.get(key, key)
        return self.issues.get(key)

    def _field_problems(self, fields: Any, *, creating: bool) -> dict[str, str]:
        if not isinstance(fields, dict):
            return {"fields": "fields is required."}
        problems: dict[str, str] = {}
        known = set(SYSTEM_FIELDS) | set(self.custom_fields.values())
        for name in fields:
            if name not in known:
                problems[name] = (f"Field '{name}' cannot be set. It is not on the appropriate "
                                  "screen, or unknown.")
        if creating:
            project = fields.get("project")
            if not (isinstance(project, dict) and (project.get("key") == self.project
                                                   or project.get("id") == "10000")):
                problems["project"] = "valid project is required"
            itype = fields.get("issuetype")
            ids = {str(10001 + i): n for i, n in enumerate(self.issue_types)}
            if not (isinstance(itype, dict) and (itype.get("id") in ids
                                                 or itype.get("name") in self.issue_types)):
                problems["issuetype"] = "valid issue type is required"
            if not fields.get("summary"):
                problems["summary"] = "You must specify a summary of the issue."
        summary = fields.get("summary")
        if summary is not None and (not isinstance(summary, str) or len(summary) > 255
                                    or "\n" in summary):
            problems["summary"] = ("Summary must be less than 255 characters."
                                   if isinstance(summary, str) and len(summary) > 255
                                   else "The summary is invalid because it contains newline "
                                        "characters." if isinstance(summary, str)
                                   else "Operation value must be a string")
        if "description" in fields and not isinstance(fields["description"], str | None):
            problems["description"] = "Operation value must be a string"
        if "priority" in fields:
            p = fields["priority"]
            if not (isinstance(p, dict) and (p.get("name") in self.priorities
                                             or p.get("id") in {str(i + 1) for i in
                                                                range(len(self.priorities))})):
                problems["priority"] = "Specify the Priority (id or name) in the string format"
        if "labels" in fields:
            labels = fields["labels"]
            if not (isinstance(labels, list)
                    and all(isinstance(x, str) and LABEL.match(x) for x in labels)):
                problems["labels"] = "The label must not contain spaces and be 255 characters " \
                                     "at most."
        return problems

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        problems = self._field_problems(body.get("fields") if isinstance(body, dict) else None,
                                        creating=True)
        if problems:
            return jira_error(400, [], problems)
        assert isinstance(body, dict)
        number, self._next_number = self._next_number, self._next_number + 1
        issue_id, self._next_id = self._next_id, self._next_id + 1
        fields = dict(body["fields"])
        issue = FakeIssue(issue_id, f"{self.project}-{number}", self.project, fields,
                          time.monotonic())
        self.issues[issue.key] = issue
        self.journal.append((issue.key, str(fields.get("description") or "")))
        answer = {"id": str(issue_id), "key": issue.key, "self": f"{self.url}/rest/api/2/"
                                                                  f"issue/{issue_id}"}
        if self.drop_creates > 0:
            self.drop_creates -= 1
            # Committed, and the answer never arrives: the client sees a dropped connection.
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError
        if self.hold_creates:
            self.created_while_held += 1
            await self._held.wait()
        return web.json_response(answer, status=201)

    def _issue_json(self, issue: FakeIssue, expand: str) -> dict[str, Any]:
        status_id, category = STATUSES[issue.status]
        fields = dict(issue.fields)
        fields.update(
            status={"id": status_id, "name": issue.status,
                    "statusCategory": {"key": category, "name": CATEGORY_NAMES[category]}},
            resolution=None if issue.resolution is None else {"name": issue.resolution},
            comment={"comments": [{"body": c} for c in issue.comments],
                     "total": len(issue.comments)},
            project={"key": issue.project, "id": "10000"})
        out: dict[str, Any] = {"id": str(issue.id), "key": issue.key, "fields": fields}
        if "transitions" in expand:
            out["transitions"] = self._available(issue, "transitions.fields" in expand)
        if "changelog" in expand:
            out["changelog"] = {"histories": issue.history, "total": len(issue.history)}
        return out

    @on_issue
    async def _get_issue(self, request: web.Request, issue: FakeIssue) -> web.Response:
        return web.json_response(self._issue_json(issue, request.query.get("expand", "")))

    @on_issue
    async def _update(self, request: web.Request, issue: FakeIssue) -> web.Response:
        body = await self._json(request)
        fields = body.get("fields") if isinstance(body, dict) else None
        problems = self._field_problems(fields, creating=False)
        if problems:
            return jira_error(400, [], problems)
        assert isinstance(fields, dict)
        issue.fields.update(fields)
        return web.Response(status=204)

    @on_issue
    async def _comment(self, request: web.Request, issue: FakeIssue) -> web.Response:
        body = await self._json(request)
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return jira_error(400, [], {"comment": "Comment body can not be empty!"})
        issue.comments.append(text)
        self.journal.append((issue.key, text))
        return web.json_response({"id": str(len(issue.comments)), "body": text}, status=201)

    # -- workflow

    def _available(self, issue: FakeIssue, with_fields: bool) -> list[dict[str, Any]]:
        out = []
        for tid, name, target in TRANSITIONS:
            if target == issue.status:
                continue
            status_id, category = STATUSES[target]
            t: dict[str, Any] = {
                "id": tid, "name": name, "hasScreen": target == "Done",
                "to": {"id": status_id, "name": target,
                       "statusCategory": {"key": category, "name": CATEGORY_NAMES[category]}}}
            if with_fields:
                t["fields"] = {} if target != "Done" else {"resolution": {
                    "required": True, "name": "Resolution", "key": "resolution",
                    "schema": {"type": "resolution", "system": "resolution"},
                    "operations": ["set"],
                    "allowedValues": [{"id": str(i + 1), "name": r}
                                      for i, r in enumerate(RESOLUTIONS)]}}
            out.append(t)
        return out

    @on_issue
    async def _transitions(self, request: web.Request, issue: FakeIssue) -> web.Response:
        with_fields = "transitions.fields" in request.query.get("expand", "")
        return web.json_response({"expand": "transitions",
                                  "transitions": self._available(issue, with_fields)})

    @on_issue
    async def _transition(self, request: web.Request, issue: FakeIssue) -> web.Response:
        body = await self._json(request)
        tid = (body.get("transition") or {}).get("id") if isinstance(body, dict) else None
        chosen = [t for t in TRANSITIONS if t[0] == str(tid) and t[2] != issue.status]
        if not chosen:
            return jira_error(400, [f"Transition id '{tid}' is not valid for this issue."])
        assert isinstance(body, dict)
        target = chosen[0][2]
        fields = body.get("fields") or {}
        resolution: str | None = None
        if target == "Done":
            given = fields.get("resolution")
            if given is None:
                return jira_error(400, [], {"resolution": "Resolution is required."})
            name = given.get("name") if isinstance(given, dict) else None
            if name not in RESOLUTIONS:
                return jira_error(400, [], {"resolution": "Could not find valid 'id' or "
                                                          "'name' in resolution object."})
            resolution = name
        elif fields:
            return jira_error(400, [], {k: f"Field '{k}' cannot be set. It is not on the "
                                           "appropriate screen, or unknown." for k in fields})
        for add in ((body.get("update") or {}).get("comment") or []):
            text = (add.get("add") or {}).get("body") if isinstance(add, dict) else None
            if not isinstance(text, str) or not text.strip():
                return jira_error(400, [], {"comment": "Comment body can not be empty!"})
            issue.comments.append(text)
            self.journal.append((issue.key, text))
        self._move_to(issue, target, resolution, "bridge bot")
        return web.Response(status=204)

    def _move_to(self, issue: FakeIssue, target: str, resolution: str | None, by: str) -> None:
        items: list[dict[str, str | None]] = [
            {"field": "status", "fromString": issue.status, "toString": target}]
        if resolution != issue.resolution:
            items.append({"field": "resolution", "fromString": issue.resolution,
                          "toString": resolution})
        issue.status, issue.resolution = target, resolution
        issue.history.append({"id": str(len(issue.history) + 1),
                              "author": {"displayName": by}, "items": items})

    # -- search

    def _matching(self, jql: str) -> list[FakeIssue] | None:
        found = JQL.match(jql.strip())
        if found is None:
            return None
        label, project = found.groups()
        visible = time.monotonic() - self.search_lag
        return sorted((i for i in self.issues.values() if label in i.labels
                       and (project is None or i.project == project) and i.created <= visible),
                      key=lambda i: i.id)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.method == "POST":
            body = await self._json(request)
            return body if isinstance(body, dict) else {}
        return dict(request.query)

    async def _search(self, request: web.Request) -> web.Response:
        if self.mode == "cloud":
            return jira_error(410, ["The requested API has been removed. Please migrate to the "
                                    "/rest/api/3/search/jql API."])
        params = await self._params(request)
        found = self._matching(str(params.get("jql", "")))
        if found is None:
            return jira_error(400, ["Error in the JQL Query: the query is not supported."])
        start = int(params.get("startAt", 0))
        size = min(int(params.get("maxResults", 50)), self.page_cap)
        page = found[start:start + size]
        return web.json_response({"startAt": start, "maxResults": size, "total": len(found),
                                  "issues": [self._issue_json(i, "") for i in page]})

    async def _search_jql(self, request: web.Request) -> web.Response:
        if self.mode != "cloud":
            return web.Response(status=404, text="Not Found")
        params = await self._params(request)
        found = self._matching(str(params.get("jql", "")))
        if found is None:
            return jira_error(400, ["Error in the JQL Query: the query is not supported."])
        token = params.get("nextPageToken")
        try:
            start = int(base64.b64decode(str(token)).decode()) if token else 0
        except (ValueError, binascii.Error):
            return jira_error(400, ["Invalid nextPageToken."])
        size = min(int(params.get("maxResults", 50)), self.page_cap)
        page = found[start:start + size]
        out: dict[str, Any] = {"issues": [self._issue_json(i, "") for i in page],
                               "isLast": start + size >= len(found)}
        if not out["isLast"]:  # Cloud leaves the key out on the last page
            out["nextPageToken"] = base64.b64encode(str(start + size).encode()).decode()
        return web.json_response(out)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeJira(mode=args.mode, latency=args.latency)
    await fake.start(args.port)
    print(fake.url, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="a strict fake Jira for benchmarks")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=["cloud", "datacenter"], default="cloud")
    parser.add_argument("--latency", type=float, default=0.0)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
