"""Ayliea: AI-security posture — recommendations, per-framework scores, AI platform discovery.

- Recommendations are paged by `limit`/`offset` with no total; the list ends at a short page.
  Pages overlap by one row so that a list shifting under us (an insert or delete ahead of the
  offset) is noticed instead of silently skipping a row (see `bridge.sources.paging`).
  `open`/`in_progress` are active, `completed`/`dismissed` resolve; priority (1 = highest) maps
  to severity by a configurable table. They change with assessments, so when `/scores` shows no
  new assessment the list is re-read for status changes made by people only every sweep while
  that is cheap for the rate budget, else every `full_resweep_interval`
  (bridge/sources/freshness.py): an idle cycle of a large estate costs one request.
- Scores: one item per framework. Only a grade change or a drop of `overall_score` by at least
  `score_drop_threshold` (against the last reported value) is a `changed` event, with old and
  new values; rises and small wobbles are not (a `drop_rule`, see `bridge.diff`).
- Discovery is optional (off by default) and its shape is unconfirmed, so it is read
  tolerantly: a list found somewhere unexpected, or rows without an identity, still create
  and change items but make the kind incomplete, so a guessed shape never resolves anything.

A 403 names the scope the key lacks (the other parts still run), or says the organisation's
plan has no API access (Enterprise only, per the docs: nothing else is tried that sweep). Both
are coverage reasons (bridge/sources/coverage.py), as they are blind spots, not outages. Rows
are read one by one (`bridge.sources.rows`): a row we cannot read is skipped and leaves its kind incomplete.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from bridge.diff import ChangeRule, drop_rule
from bridge.http import (
    ErrorScheme,
    HttpContext,
    VendorClient,
    VendorError,
    credential_scope,
    validate,
)
from bridge.model import Item, JSONScalar, Severity, Sweep, json_scalar
from bridge.sources.base import ConditionLog, Source, SourceConfig, SweepParts
from bridge.sources.coverage import SOURCE_HEALTH, Check
from bridge.sources.freshness import full_read_cursor, full_read_due
from bridge.sources.paging import Pass, by_offset, with_drift_retries
from bridge.sources.rows import Remembered, Unusable, row_values, skipped_note, to_items

log = structlog.get_logger(__name__)

RECOMMENDATION = "recommendation"
SCORE = "score"
DISCOVERY = "discovery"
MAX_PAGE = 100
SCOPES = {RECOMMENDATION: "recommendations:read", SCORE: "scores:read",
          DISCOVERY: "discovery:read"}
PRIORITY_SEVERITY: dict[int, Severity] = {1: "critical", 2: "high", 3: "medium", 4: "low",
                                          5: "info"}
GRADE_SEVERITY: dict[str, Severity] = {"A": "info", "B": "low", "C": "medium", "D": "high",
                                       "E": "critical", "F": "critical"}
PLAN_HINT = ("the Ayliea organisation's plan does not include API access (Enterprise tier "
             "only): nothing is seen until the plan changes")
CURSOR_ASSESSMENTS = "assessments"


class AylieaErrors(ErrorScheme):
    """`{"error": "message"}`; a 200 carrying that shape is an error too."""

    def body_error(self, body: Any) -> bool:
        return isinstance(body, dict) and isinstance(body.get("error"), str)


class AylieaConfig(SourceConfig):
    type: Literal["ayliea"]
    secret_patterns = (r"ayliea_pk_[0-9A-Za-z_\-]{8,}",)
    base_url: str = Field(default="https://assess.ayliea.com/api/v1", pattern=r"^https?://")
    api_key: SecretStr
    recommendations: bool = True
    scores: bool = True
    discovery: bool = False
    page_size: int = Field(default=MAX_PAGE, ge=2, le=MAX_PAGE)
    # Rows each page repeats from the previous one, to notice a shifting list (0 = off).
    page_overlap: int = Field(default=1, ge=0, le=10)
    drift_retries: int = Field(default=1, ge=0, le=5)
    full_resweep_interval: float = Field(default=3600.0, ge=0)
    # Re-read recommendations every sweep while that costs at most this share of the requests
    # one interval allows (bridge/sources/freshness.py); 0: only every full_resweep_interval.
    resweep_budget_share: float = Field(default=0.1, ge=0, le=1)
    resolved_statuses: tuple[str, ...] = ("completed", "dismissed")
    priority_severity: dict[int, Severity] = Field(
        default_factory=lambda: dict(PRIORITY_SEVERITY))
    unknown_priority_severity: Severity = "low"
    score_drop_threshold: float = Field(default=5.0, ge=0)
    grade_severity: dict[str, Severity] = Field(default_factory=lambda: dict(GRADE_SEVERITY))
    discovery_severity: Severity = "low"

    @model_validator(mode="after")
    def _overlap_fits(self) -> AylieaConfig:
        if self.page_overlap >= self.page_size:
            raise ValueError("page_overlap must be smaller than page_size")
        return self

    def build(self, http: HttpContext) -> AylieaSource:
        return AylieaSource(self, http)


class _Recommendation(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    status: str
    title: str | None = None
    priority: int | None = None


# What `AylieaSource.read` takes from a listed recommendation: `_Recommendation`'s fields, then
# the attributes.
_RECOMMENDATION_FIELDS = ("id", "status", "title", "priority", "framework_id", "category")
_recommendation_values = row_values(_RECOMMENDATION_FIELDS)


class _Recommendations(BaseModel):
    recommendations: list[Any]  # each row is validated on its own


class _Score(BaseModel):
    model_config = ConfigDict(extra="ignore")
    framework_id: str = Field(min_length=1)
    overall_score: float
    grade: str
    completed_at: str | None = None


class _Scores(BaseModel):
    scores: list[Any]  # each row is validated on its own

_ID_FIELDS = ("id", "platform_id", "platformId", "slug", "name")
_LIST_FIELDS = ("platforms", "data", "discovered", "results", "items")
_EXPECTED = ("platforms", "data")


def _platform_rows(body: Any, depth: int = 0) -> tuple[list[Any], bool] | None:
    """(the list of platforms, whether it was where we expect it) wherever it is: a bare
    list, `platforms` or `data`, or searched for under other keys one level deep."""
    if isinstance(body, list):
        return body, depth == 0
    if not isinstance(body, dict) or depth > 1:
        return None
    for name in _LIST_FIELDS:
        found = _platform_rows(body.get(name), depth + 1) if name in body else None
        if found is not None:
            rows, _ = found
            return rows, depth == 0 and name in _EXPECTED and isinstance(body[name], list)
    lists = [v for v in body.values() if isinstance(v, list)]
    return (lists[0], False) if len(lists) == 1 else None


def _identity(row: Any, name: str) -> str | None:
    value = row.get(name) if isinstance(row, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


class AylieaSource(Source[AylieaConfig]):
    vendor = "ayliea"
    display_name = "Ayliea"
    item_kinds = (RECOMMENDATION, SCORE, DISCOVERY, SOURCE_HEALTH)
    kind_tracked_fields = {SCORE: ("attributes.grade", "attributes.overall_score")}

    def __init__(self, config: AylieaConfig, http: HttpContext) -> None:
        super().__init__(config)
        secret = config.api_key.get_secret_value()
        self.client: VendorClient = http.client(
            vendor=self.vendor, base_url=config.base_url, headers={"X-API-Key": secret},
            config=config.http, limit_scope=credential_scope(secret),
            default_per_minute=50.0,  # documented: 60/min per API key
            errors=AylieaErrors(),
        )
        self._conditions = ConditionLog(config.name)
        # Status words and priorities already mapped (a handful each, every listed row).
        self._statuses: Remembered[str, tuple[str, bool, str]] = Remembered(self._status)
        self._priorities: Remembered[int, tuple[Severity, str]] = Remembered(self._priority)

    @property
    def kinds(self) -> tuple[str, ...]:
        cfg = self.config
        return tuple(k for k, on in ((RECOMMENDATION, cfg.recommendations), (SCORE, cfg.scores),
                                     (DISCOVERY, cfg.discovery)) if on) + self.health_kinds()

    @property
    def change_rules(self) -> Mapping[str, ChangeRule]:
        return {SCORE: drop_rule("attributes.overall_score", self.config.score_drop_threshold,
                                 also=("attributes.grade",))}

    def requests(self, scope: str) -> int:
        return self.client.requests  # one scope, one client

    def _explain(self, kind: str) -> Callable[[VendorError], str]:
        def explain(exc: VendorError) -> str:
            if exc.kind == "forbidden":
                if _plan_refusal(exc):
                    return f"{PLAN_HINT} ({exc})"
                return f"API key lacks scope {SCOPES[kind]} ({exc})"
            return str(exc)

        return explain

    async def poll(self, scope: str, cursor: Mapping[str, str]) -> Sweep:
        cfg = self.config
        parts = SweepParts(scope)
        assessments: list[str | None] = [None]

        async def scores() -> None:
            assessments[0] = await self._scores(parts)

        checks: list[Check] = []
        before = {c.name: c for c in self.coverage.of(scope)}
        plan_ok = True
        for kind, on, part in ((SCORE, cfg.scores, scores),
                               (RECOMMENDATION, cfg.recommendations,
                                lambda: self._recommendations(cursor, assessments[0], parts)),
                               (DISCOVERY, cfg.discovery, lambda: self._discovery(parts))):
            if not on:
                continue
            if not plan_ok:
                parts.incomplete((kind,), f"{kind}s: not read ({PLAN_HINT})")
                continue
            error = await parts.attempt((kind,), f"{kind}s", part, self._explain(kind))
            if error is not None and error.kind == "forbidden" and _plan_refusal(error):
                plan_ok = False
                continue
            missing = error is not None and error.kind == "forbidden"
            self._conditions.report(scope, SCOPES[kind], "missing" if missing else "ok",
                                    ok=not missing, error=str(error))
            check = Check("access", "api_scope", SCOPES[kind], not missing,
                          f"the Ayliea API key lacks scope {SCOPES[kind]}: {kind}s are not "
                          "seen" if missing else "")
            if error is None or missing:
                checks.append(check)
            elif check.name in before:  # another error says nothing about the scope
                checks.append(before[check.name])
        self._conditions.report(scope, "plan", "ok" if plan_ok else "no API access", ok=plan_ok)
        checks.append(Check("access", "plan", "", plan_ok, "" if plan_ok else PLAN_HINT))
        if not plan_ok:  # the scopes cannot be judged while the plan refuses everything
            checks[:-1] = [c for c in before.values() if c.check == "api_scope"]
        self.coverage.report(scope, "access", checks)
        parts.add(SOURCE_HEALTH, self.health_items(scope), True)
        return parts.build()

    # -- scores -----------------------------------------------------------------------------

    async def _scores(self, parts: SweepParts) -> str:
        """Sweep scores; returns a fingerprint of the assessments they come from."""
        body = await self.client.get_json("/scores")
        parsed = validate(_Scores, body, "GET /scores")
        read = to_items(parsed.scores, _Score, self._score, source=self.name, kind=SCORE,
                        at="scores", id_field="framework_id")
        items = [r for r in read if isinstance(r, Item)]
        skipped = [r for r in read if isinstance(r, Unusable)]
        parts.add(SCORE, items, not skipped)
        if skipped:
            parts.note(skipped_note("scores", skipped))
        stamps = sorted(f"{i.key}@{i.attributes['completed_at']}" for i in items)
        return hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:16]

    def _score(self, raw: Mapping[str, Any], score: _Score) -> Item:
        grade = score.grade.strip().upper()
        raw_value = score.overall_score
        value = int(raw_value) if raw_value.is_integer() else raw_value
        return Item(
            kind=SCORE, key=score.framework_id,
            title=f"{score.framework_id} score {value:g} (grade {grade})",
            severity=self.config.grade_severity.get(grade, "medium"), vendor_severity=grade,
            active=True, tenant=self.config.tenant, raw=raw,
            attributes={"framework_id": score.framework_id, "overall_score": value,
                        "grade": grade, "completed_at": score.completed_at},
        )

    # -- recommendations --------------------------------------------------------------------

    async def _recommendations(self, cursor: Mapping[str, str], assessments: str | None,
                               parts: SweepParts) -> None:
        cfg = self.config
        due = full_read_due(cursor, now=time.time(), full_resweep_interval=cfg.full_resweep_interval,
                            interval=cfg.interval, per_minute=self.client.limiter.rate * 60,
                            share=cfg.resweep_budget_share)
        if assessments is not None and assessments == cursor.get(CURSOR_ASSESSMENTS) and not due:
            # Not read: nothing is said about recommendations (the kind is left out of the
            # sweep), and the note says so rather than letting "complete" imply it.
            parts.note("recommendations: not re-read (no new assessment; a full read is "
                       "costly for the rate budget, so only every full_resweep_interval)")
            return
        requests_before = self.client.requests
        swept = await with_drift_retries(
            self._walk, self.config.drift_retries,
            lambda p: log.info("ayliea_drift_retry", source=self.name, notes=p.notes))
        parts.add(RECOMMENDATION, swept.rows.values(), swept.complete)
        parts.notes.extend(swept.notes)
        if swept.complete:
            parts.cursor.update(full_read_cursor(time.time(),
                                                 self.client.requests - requests_before))
            if assessments is not None:
                parts.cursor[CURSOR_ASSESSMENTS] = assessments

    async def _walk(self) -> Pass[Item]:
        async def fetch(offset: int, limit: int) -> list[Item | Unusable]:
            body = await self.client.get_json("/recommendations",
                                              {"limit": limit, "offset": offset})
            parsed = validate(_Recommendations, body, f"GET /recommendations offset {offset}")
            return to_items(parsed.recommendations, _Recommendation, self._recommendation,
                            source=self.name, kind=RECOMMENDATION, at="recommendations",
                            first=offset, read=self.read)

        return await by_offset(fetch, lambda item: item.key, limit=self.config.page_size,
                               overlap=self.config.page_overlap, what="recommendations")

    def read(self, raw: Any) -> Item | None:
        """A listed recommendation as an item, or None when a field is not the shape
        `_Recommendation` demands: then `to_items` has pydantic read it, so a bad row is
        reported exactly as it always was. The checks are pydantic's for JSON values: only a
        JSON string is a `str`, `id` must not be empty, `title` may be null or absent, and
        `priority` is taken here only as a plain integer (not a bool, a float or a numeric
        string, which pydantic judges) or null or absent."""
        if type(raw) is not dict:
            return None
        ident, status, title, priority, framework, category = _recommendation_values(raw)
        if (type(ident) is not str or not ident or type(status) is not str
                or (title is not None and type(title) is not str)
                or (priority is not None and type(priority) is not int)):
            return None
        return self._map(raw, ident, status, title, priority, framework, category)

    def _recommendation(self, raw: Mapping[str, Any], rec: _Recommendation) -> Item:
        """A recommendation `_Recommendation` accepted, as an item (the path of rows `read`
        turned down)."""
        return self._map(raw, rec.id, rec.status, rec.title, rec.priority,
                         raw.get("framework_id"), raw.get("category"))

    def _map(self, raw: Mapping[str, Any], ident: str, status_word: str, title: str | None,
             priority: int | None, framework: Any, category: Any) -> Item:
        status, active, resolution = self._statuses[status_word]
        if priority is None:
            severity, vendor_severity = self.config.unknown_priority_severity, ""
        else:
            severity, vendor_severity = self._priorities[priority]
        # Empty values (not only nulls) are left out; then the priority, always.
        attrs: dict[str, JSONScalar]
        if type(framework) is str and framework and type(category) is str and category:
            attrs = {"framework_id": framework, "category": category, "priority": priority}
        else:
            attrs = {k: json_scalar(v) for k, v in (("framework_id", framework),
                                                     ("category", category)) if v}
            attrs["priority"] = priority
        # Positional: see rows.ITEM_ORDER.
        return Item(RECOMMENDATION, ident, title or ident, severity, active, vendor_severity,
                    status, self.config.tenant, resolution, True, attrs, raw)

    def _status(self, word: str) -> tuple[str, bool, str]:
        """(status, active, resolution) of a recommendation's status word (remembered in
        `_statuses`)."""
        status = word.strip().lower()
        resolved = status in self.config.resolved_statuses
        return status, not resolved, f"recommendation {status}" if resolved else ""

    def _priority(self, priority: int) -> tuple[Severity, str]:
        """(severity, vendor severity) of a priority (remembered in `_priorities`)."""
        fallback = self.config.unknown_priority_severity
        return self.config.priority_severity.get(priority, fallback), f"priority {priority}"

    # -- discovery --------------------------------------------------------------------------

    async def _discovery(self, parts: SweepParts) -> None:
        body = await self.client.get_json("/discovery")
        found = _platform_rows(body)
        if found is None:
            shape = ", ".join(sorted(body)) if isinstance(body, dict) else type(body).__name__
            parts.incomplete([DISCOVERY], f"discovery: no list of platforms in the answer "
                                          f"({shape})")
            return
        rows, expected = found
        if not expected:
            # Tolerated, so platforms still show up, but a guessed shape never resolves.
            parts.note("discovery: platforms found in an unexpected place in the answer; "
                       "not trusted to resolve anything")
        # The identity is the first id-like field any row has; a row without that very field
        # is unusable (keying it by another field would make its real id look absent).
        id_field = next((f for f in _ID_FIELDS if any(_identity(r, f) for r in rows)), None)
        items: list[Item] = []
        unusable = 0
        for raw in rows:
            item = self._platform(raw, id_field) if id_field else None
            if item is None:
                unusable += 1
            else:
                items.append(item)
        if unusable:
            parts.note(f"discovery: {unusable} platform row(s) without an identity were skipped")
        parts.add(DISCOVERY, items, complete=expected and not unusable)

    def _platform(self, raw: Any, id_field: str) -> Item | None:
        ident = _identity(raw, id_field)
        if ident is None:
            return None
        name = str(raw.get("name") or raw.get("platform") or ident)
        vendor = raw.get("vendor")
        title = f"AI platform detected: {name}" + (f" ({vendor})" if vendor else "")
        attrs = {k: json_scalar(raw[k]) for k in ("name", "vendor", "confidence", "detected_at")
                 if k in raw and not isinstance(raw[k], dict | list)}
        return Item(kind=DISCOVERY, key=str(ident), title=title,
                    severity=self.config.discovery_severity, active=True,
                    tenant=self.config.tenant, attributes=attrs, raw=raw)


def _plan_refusal(exc: VendorError) -> bool:
    """A 403 about the plan rather than a scope: the API is Enterprise-only (the docs), and a
    key of another plan is refused whatever it asks for."""
    text = str(exc).lower()
    return "scope" not in text and ("plan" in text or "enterprise" in text or "tier" in text)
