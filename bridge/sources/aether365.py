"""Aether365: Microsoft 365 posture — compliance scan results, identity-risk alerts, policies.

Each API key is bound to one tenant and has its own 120 req/min, so each tenant is its own
scope with its own rate-limit bucket. A sweep has three parts that succeed or fail on their own:

- Compliance results change only when a scan completes. One probe of the scan list finds the
  latest completed scan of `scan_type` (default `compliance`: results are compared only
  between scans of one type, so a tenant alternating compliance and exposure scans does not
  churn); only a scan not swept before is paged through (200 rows a page,
  `meta.totalPages` computed when missing). Its `score` is one `score` item per tenant,
  `changed` when it drops by `score_drop_threshold` or crosses `score_floor`. Results are
  keyed by `test_id` (result ids change every scan). A test that passes, or is skipped
  (unless `skipped_resolves` is off), is resolved. The swept scan id is the cursor, committed
  with the sweep, so a crash re-sweeps that scan.
- Threat alerts are one snapshot with a `sources` verdict per category. A category that is not
  `ok` creates nothing and resolves nothing. `needsConsent`/`notLicensed` are configuration
  facts: noted and logged once, the category left alone, the sweep still complete. `error` (or
  anything unknown) is an outage: that category is incomplete.
- Policies: non-compliant policies are posture items; becoming compliant resolves them.

Coverage (bridge/sources/coverage.py): no completed scan within `max_scan_age`, a latest scan
that ended `failed`, a threat category not `ok`, a tenant not connected, and the plan's quota
(a 429 "Plan limit reached", told apart from the per-minute rate limit by its code: it backs
off until its reset, with no request meanwhile, instead of retrying).

Errors: `success: false` is an error even with HTTP 200. AUTH_* (and TENANT_NOT_FOUND) fail the
sweep after one request — the poll interval is the backoff, so an operator sees one clear error
per interval; TENANT_NOT_CONNECTED makes every part incomplete (degraded, not failed);
INTERNAL_ERROR is retried like a 5xx; VALIDATION_ERROR is our bug and is logged as such, once.
Rows are read one by one (`bridge.sources.rows`): a row we cannot read is skipped and leaves
its kind incomplete, instead of costing the page or the snapshot it came in.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from bridge.components import NAME_PATTERN, SecretFields, StrictModel
from bridge.diff import ChangeRule, drop_rule
from bridge.http import (
    ErrorKind,
    ErrorScheme,
    HttpContext,
    VendorClient,
    VendorError,
    credential_scope,
    url_path,
    validate,
)
from bridge.model import Item, JSONScalar, Severity, Sweep, json_scalar, normalize_severity
from bridge.sources.base import ConditionLog, Source, SourceConfig, SweepParts
from bridge.sources.coverage import SOURCE_HEALTH, Check
from bridge.sources.paging import Page, Pass, numbered, page_count, with_drift_retries
from bridge.sources.rows import Remembered, Unusable, row_values, skipped_note, to_items

log = structlog.get_logger(__name__)

TEST = "test_result"
SCORE = "score"
RISKY_USER = "risky_user"
RISK_DETECTION = "risk_detection"
SECURITY_ALERT = "security_alert"
POLICY = "policy"
THREAT_KINDS = (RISKY_USER, RISK_DETECTION, SECURITY_ALERT)
MAX_PAGE = 200
SCAN_PROBE = 20  # scans listed by the probe: enough to find the latest of the type
CURSOR_SCAN = "last_scan_id"
# Threat `sources` states that describe the tenant's setup rather than an outage.
CONFIGURATION_STATES = {"needsConsent": "grant the consent in Aether365",
                        "notLicensed": "the tenant's Microsoft licence does not include it"}


class Aether365Errors(ErrorScheme):
    """`{success: false, error: {code, message}}`, with meaning carried by the code."""

    def quota(self, code: str | None, message: str) -> bool:
        """The reference lists 429 as "Plan limit reached" and its keys page as the rate
        limit: the code (SCAN_PLAN_LIMIT_REACHED) or the message tells which."""
        return "PLAN_LIMIT" in (code or "").upper() or "plan limit" in message.lower()

    def body_error(self, body: Any) -> bool:
        return isinstance(body, dict) and body.get("success") is False

    def kind(self, status: int, code: str | None) -> ErrorKind:
        word = (code or "").upper()
        if word.startswith("AUTH_") or word == "TENANT_NOT_FOUND":
            return "auth"  # fatal until the config changes
        if word == "INTERNAL_ERROR":
            return "server"
        if word.startswith("RATE_LIMIT"):
            return "rate_limited"
        if "PLAN_LIMIT" in word:
            return "quota"
        if word == "VALIDATION_ERROR":
            return "client"
        return super().kind(status, code)


class Aether365Tenant(SecretFields, StrictModel):
    """One tenant: its name (the scope is `<source>/<name>`) and the API key bound to it."""

    name: str = Field(pattern=NAME_PATTERN)
    api_key: SecretStr


class Aether365Config(SourceConfig):
    type: Literal["aether365"]
    secret_patterns = (r"ae_live_[0-9A-Za-z_\-]{8,}",)
    base_url: str = Field(default="https://api.aether365.io", pattern=r"^https?://")
    # Either one key (scope = the source name, items labelled with `tenant`) or `tenants`.
    api_key: SecretStr | None = None
    tenants: tuple[Aether365Tenant, ...] = ()
    compliance: bool = True
    # One `score` item per tenant from the latest completed scan (needs `compliance`).
    scores: bool = True
    threats: bool = True
    policies: bool = True
    page_size: int = Field(default=MAX_PAGE, ge=1, le=MAX_PAGE)
    # Only completed scans of this type are compared (a test absent from an exposure scan is
    # not a fix of a compliance test); None = any type, only for tenants running one type.
    scan_type: str | None = "compliance"
    # Coverage: the latest completed scan older than this (seconds) is a blind spot.
    max_scan_age: float = Field(default=8 * 86400.0, gt=0)
    # Score item: `changed` on a drop of at least this many points, or crossing the floor.
    score_drop_threshold: float = Field(default=5.0, ge=0)
    score_floor: float | None = Field(default=None, ge=0, le=100)
    # How long a plan-quota 429 without Retry-After keeps the tenant from being read.
    quota_backoff: float = Field(default=3600.0, gt=0)
    # A skipped test resolves like a passed one; off: a skipped test is left as it was.
    skipped_resolves: bool = True
    drift_retries: int = Field(default=1, ge=0, le=5)
    inactive_risk_states: tuple[str, ...] = ("remediated", "dismissed", "confirmedSafe")
    resolved_alert_statuses: tuple[str, ...] = ("resolved",)
    policy_severity: Severity = "medium"

    @model_validator(mode="after")
    def _keys(self) -> Aether365Config:
        if (self.api_key is None) == (not self.tenants):
            raise ValueError("set either api_key (one tenant) or tenants (one key per tenant)")
        names = [t.name for t in self.tenants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate tenant name(s): {', '.join(dupes)}")
        return self

    def build(self, http: HttpContext) -> Aether365Source:
        return Aether365Source(self, http)


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")
    success: Literal[True]


class _Meta(BaseModel):
    model_config = ConfigDict(extra="ignore")
    total: int = Field(ge=0)
    page: int | None = None
    limit: int | None = Field(default=None, ge=1)
    totalPages: int | None = Field(default=None, ge=0)


class _Scan(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    status: str
    scan_type: str | None = None
    completed_at: str | None = None
    score: float | None = None


class _Scans(_Envelope):
    data: list[_Scan]


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)  # unused (it changes every scan), but a row without it is broken
    test_id: str = Field(min_length=1)
    result: str
    title: str | None = None
    severity: str | None = None
    framework: str | None = None


# What `_ResultReader.read` takes from a listed result: `_Result`'s fields, then the attributes.
_RESULT_ATTRS = ("framework", "source_tool", "help_url")
_RESULT_FIELDS = ("id", "test_id", "result", "title", "severity", *_RESULT_ATTRS)
_result_values = row_values(_RESULT_FIELDS)
_item_key = operator.attrgetter("key")


class _Results(_Envelope):
    data: list[Any]  # each row is validated on its own
    meta: _Meta


class _Policy(BaseModel):
    model_config = ConfigDict(extra="ignore")
    key: str = Field(min_length=1)
    title: str | None = None
    compliant: bool


class _Policies(_Envelope):
    data: list[Any]  # each row is validated on its own
    meta: _Meta | None = None


class _ThreatData(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sources: dict[str, str]


class _Threats(_Envelope):
    data: _ThreatData


class _Signal(BaseModel):
    """What every risky user, risk detection and alert has; the rest stays in `raw`."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)


@dataclass(frozen=True)
class _Tenant:
    scope: str
    name: str
    label: str
    client: VendorClient


def _attrs(raw: Mapping[str, Any], names: Sequence[str]) -> dict[str, JSONScalar]:
    return {n: json_scalar(raw[n]) for n in names if raw.get(n) is not None}


class Aether365Source(Source[Aether365Config]):
    vendor = "aether365"
    display_name = "Aether365"
    item_kinds = (TEST, SCORE, *THREAT_KINDS, POLICY, SOURCE_HEALTH)
    kind_tracked_fields = {SCORE: ("attributes.score", "attributes.below_floor")}

    def __init__(self, config: Aether365Config, http: HttpContext) -> None:
        super().__init__(config)
        keys = ([(config.name, config.name, config.tenant, config.api_key)] if config.api_key
                else [(f"{config.name}/{t.name}", t.name, t.name, t.api_key)
                      for t in config.tenants])
        self._tenants: dict[str, _Tenant] = {}
        for scope, name, label, key in keys:
            secret = key.get_secret_value()
            client = http.client(
                vendor=self.vendor, base_url=config.base_url,
                headers={"Authorization": f"Bearer {secret}"}, config=config.http,
                limit_scope=credential_scope(secret),
                default_per_minute=100.0,  # documented: 120/min per API key
                errors=Aether365Errors(),
            )
            self._tenants[scope] = _Tenant(scope, name, label, client)
        self._conditions = ConditionLog(config.name)
        # Scope -> wall-clock time before which the plan's quota is exhausted.
        self._quota_until: dict[str, float] = {}
        # Severity words already mapped (a handful, 2,000 results a tenant and scan).
        self._severities: Remembered[str, Severity] = Remembered(normalize_severity)

    @property
    def change_rules(self) -> Mapping[str, ChangeRule]:
        return {SCORE: drop_rule("attributes.score", self.config.score_drop_threshold,
                                 also=("attributes.below_floor",))}

    @property
    def scopes(self) -> Sequence[str]:
        return tuple(self._tenants)

    @property
    def kinds(self) -> tuple[str, ...]:
        cfg = self.config
        return ((TEST,) * cfg.compliance + (SCORE,) * (cfg.compliance and cfg.scores)
                + THREAT_KINDS * cfg.threats
                + (POLICY,) * cfg.policies + self.health_kinds())

    def requests(self, scope: str) -> int:
        return self._tenants[scope].client.requests  # each tenant has its own client

    def client(self, scope: str) -> VendorClient:
        return self._tenants[scope].client

    async def poll(self, scope: str, cursor: Mapping[str, str]) -> Sweep:
        sweep = await self._poll(scope, cursor)
        health = self.health_items(scope, self._tenants[scope].label)
        if not health:
            return sweep
        return replace(sweep, items=(*sweep.items, *health),
                       kinds={**sweep.kinds, SOURCE_HEALTH: True})

    async def _poll(self, scope: str, cursor: Mapping[str, str]) -> Sweep:
        tenant = self._tenants[scope]
        parts = SweepParts(scope)
        cfg = self.config
        until = self._quota_until.get(scope, 0.0)
        if time.time() < until:
            parts.incomplete(self.kinds, f"plan limit reached for tenant {tenant.name}: not "
                                         f"read until {_moment(until)} (the quota's reset)")
            return parts.build()
        plan: list[tuple[tuple[str, ...], str, Callable[[], Awaitable[None]]]] = []
        if cfg.compliance:
            plan.append(((TEST, SCORE), "compliance results",
                         lambda: self._results(tenant, cursor, parts)))
        if cfg.threats:
            plan.append((THREAT_KINDS, "threat alerts", lambda: self._threats(tenant, parts)))
        if cfg.policies:
            plan.append(((POLICY,), "policies", lambda: self._policies(tenant, parts)))
        for n, (kinds, what, part) in enumerate(plan):
            error = await parts.attempt(kinds, what, part)
            if error is not None and error.kind == "quota":
                rest = [k for later in plan[n + 1 :] for k in later[0]]
                self._quota(tenant, error, parts, rest)
                return parts.build()
            if error is not None and error.code == "TENANT_NOT_CONNECTED":
                rest = [k for later in plan[n + 1 :] for k in later[0]]
                parts.incomplete(rest, f"tenant {tenant.name} is not connected (Microsoft consent "
                                       "not completed): nothing swept until it is")
                self._conditions.report(scope, "tenant", "not connected", ok=False,
                                        error=str(error))
                self.coverage.report(scope, "tenant", [Check(
                    "tenant", "tenant_connected", "", False,
                    f"Aether365 tenant {tenant.name} is not connected (Microsoft consent not "
                    "completed): nothing is read")])
                return parts.build()
        self._conditions.report(scope, "tenant", "connected", ok=True)
        self.coverage.report(scope, "tenant", [Check("tenant", "tenant_connected", "", True)])
        self.coverage.report(scope, "quota", [Check("quota", "plan_quota", "", True)])
        return parts.build()

    def _quota(self, tenant: _Tenant, error: VendorError, parts: SweepParts,
               rest: Sequence[str]) -> None:
        """The plan's quota is spent: no request until its reset (Retry-After, else
        `quota_backoff`), every part incomplete, and a coverage reason meanwhile."""
        wait = error.retry_after if error.retry_after is not None else self.config.quota_backoff
        until = time.time() + wait
        self._quota_until[tenant.scope] = until
        parts.incomplete(rest, f"plan limit reached for tenant {tenant.name}: not read until "
                               f"{_moment(until)}")
        log.warning("aether365_plan_limit", source=self.name, scope=tenant.scope,
                    retry_after=wait, error=str(error))
        self.coverage.report(tenant.scope, "quota", [Check(
            "quota", "plan_quota", "", False,
            f"Aether365 plan limit reached for tenant {tenant.name} (HTTP 429 Plan limit "
            f"reached): nothing is read until {_moment(until)}")])

    # -- compliance results -----------------------------------------------------------------

    async def _results(self, tenant: _Tenant, cursor: Mapping[str, str],
                       parts: SweepParts) -> None:
        # Newest first, every status: the latest completed scan to sweep, and whether scans
        # have been failing since (coverage). The type is filtered here too, whatever the
        # API does with the parameter.
        params: dict[str, str | int] = {"limit": SCAN_PROBE}
        if self.config.scan_type:
            params["scan_type"] = self.config.scan_type
        body = await tenant.client.get_json("/tenants/me/scans", params)
        scans = validate(_Scans, body, "GET /tenants/me/scans")
        wanted = (self.config.scan_type or "").lower()
        mine = [s for s in scans.data
                if not wanted or (s.scan_type or wanted).lower() == wanted]
        done = [s for s in mine if s.status.lower() == "completed"]
        self._scan_coverage(tenant, mine, done[0] if done else None)
        if not done:
            parts.note(f"compliance: no completed {wanted + ' ' if wanted else ''}scan listed")
            return
        scan = done[0]
        if scan.id == cursor.get(CURSOR_SCAN):
            return  # nothing new since the last sweep: stored results are left alone
        swept = await with_drift_retries(
            lambda: self._scan_results(tenant, scan), self.config.drift_retries,
            lambda p: log.info("aether365_drift_retry", source=self.name, scope=tenant.scope,
                               notes=p.notes))
        parts.add(TEST, swept.rows.values(), swept.complete)
        parts.notes.extend(swept.notes)
        if self.config.scores and scan.score is not None:
            parts.add(SCORE, [self._score_item(tenant, scan, scan.score)], True)
        if swept.complete:
            parts.cursor[CURSOR_SCAN] = scan.id

    def _score_item(self, tenant: _Tenant, scan: _Scan, score: float) -> Item:
        """One item per tenant and scan type: the score of its latest completed scan."""
        value = int(score) if score.is_integer() else score
        floor = self.config.score_floor
        below = floor is not None and score < floor
        kind_of = scan.scan_type or "scan"
        return Item(
            kind=SCORE, key=kind_of, title=f"Aether365 {kind_of} score {value:g}%"
            + (f" (below the floor of {floor:g}%)" if below else ""),
            severity="high" if below else "info", active=True, tenant=tenant.label,
            attributes={"score": value, "below_floor": below, "scan_id": scan.id,
                        "scan_type": scan.scan_type, "scan_completed_at": scan.completed_at},
        )

    def _scan_coverage(self, tenant: _Tenant, scans: Sequence[_Scan],
                       latest: _Scan | None) -> None:
        """Scans that stopped (none completed within `max_scan_age`) or that fail are blind
        spots: the results would otherwise just stay as they were."""
        kind_of = self.config.scan_type or "any"
        finished = next((s for s in scans if s.status.lower() in ("completed", "failed")), None)
        failed = finished is not None and finished.status.lower() == "failed"
        checks = [Check("scans", "scan_failed", kind_of, not failed,
                        f"the latest Aether365 {kind_of} scan of tenant {tenant.name} "
                        f"({finished.id if finished else ''}) failed" if failed else "")]
        age = _age(latest.completed_at) if latest is not None else None
        max_age = self.config.max_scan_age
        if latest is None:
            checks.append(Check("scans", "scan_age", kind_of, False,
                                f"tenant {tenant.name} has no completed Aether365 {kind_of} "
                                "scan: its compliance results are not seen"))
        elif age is not None and age > max_age:
            checks.append(Check("scans", "scan_age", kind_of, False,
                                f"the latest completed Aether365 {kind_of} scan of tenant "
                                f"{tenant.name} is {age / 86400:.1f} days old (max_scan_age "
                                f"{max_age / 86400:g} days)"))
        else:
            checks.append(Check("scans", "scan_age", kind_of, True))
        self.coverage.report(tenant.scope, "scans", checks)

    async def _scan_results(self, tenant: _Tenant, scan: _Scan) -> Pass[Item]:
        path = url_path("scans", scan.id, "results")
        size = self.config.page_size
        reader = _ResultReader(tenant.label, scan, self.config.skipped_resolves,
                               self._severities)

        async def fetch(page: int) -> Page[Item]:
            body = await tenant.client.get_json(path, {"page": page, "limit": size})
            parsed = validate(_Results, body, f"GET /scans/{{id}}/results page {page}")
            meta = parsed.meta
            rows = to_items(parsed.data, _Result, reader.to_item, source=self.name, kind=TEST,
                            at="data", id_field="test_id", first=(page - 1) * size,
                            read=reader.read)
            return Page(rows, meta.total,
                        page_count(meta.total, meta.limit or size, meta.totalPages))

        return await numbered(fetch, _item_key, what="scan results")

    # -- threat alerts ----------------------------------------------------------------------

    async def _threats(self, tenant: _Tenant, parts: SweepParts) -> None:
        body = await tenant.client.get_json("/tenants/me/threats")
        snapshot = validate(_Threats, body, "GET /tenants/me/threats")
        data: Mapping[str, Any] = body["data"]
        self.coverage.report(tenant.scope, "threats", [
            Check("threats", "threat_source", category, state == "ok",
                  "" if state == "ok" else f"Aether365 threat source {category} of tenant "
                  f"{tenant.name} is {state}"
                  + (f" ({CONFIGURATION_STATES[state]})" if state in CONFIGURATION_STATES
                     else ""))
            for category in ("riskyUsers", "riskDetections", "securityAlerts")
            for state in [snapshot.data.sources.get(category, "missing")]])
        for category, kind, to_item in (("riskyUsers", RISKY_USER, self._risky_user),
                                        ("riskDetections", RISK_DETECTION, self._detection),
                                        ("securityAlerts", SECURITY_ALERT, self._alert)):
            state = snapshot.data.sources.get(category, "missing")
            if state != "ok":
                self._source_not_ok(tenant, parts, category, kind, state)
                continue
            self._conditions.report(tenant.scope, category, "ok", ok=True)
            rows = data.get(category)
            if not isinstance(rows, list):
                parts.incomplete([kind], f"threats: data.{category} is not a list "
                                         f"({type(rows).__name__})")
                continue
            read = to_items(rows, _Signal, _signal(tenant, to_item), source=self.name,
                            kind=kind, at=f"data.{category}")
            skipped = [r for r in read if isinstance(r, Unusable)]
            parts.add(kind, [r for r in read if isinstance(r, Item)], not skipped)
            if skipped:
                parts.note(skipped_note(f"threats data.{category}", skipped))

    def _source_not_ok(self, tenant: _Tenant, parts: SweepParts, category: str, kind: str,
                       state: str) -> None:
        """Its items are neither created nor resolved; only an outage makes the sweep
        incomplete, because a missing licence is not going to fix itself by retrying."""
        hint = CONFIGURATION_STATES.get(state)
        if hint is not None:
            parts.note(f"threats: {category} is {state} ({hint}); left alone")
        else:
            parts.incomplete([kind], f"threats: {category} source is {state}; nothing created "
                                     "or resolved from this answer")
        self._conditions.report(tenant.scope, category, state, ok=False,
                                configuration=hint is not None)

    def _inactive_risk(self, raw: Mapping[str, Any]) -> str:
        level = str(raw.get("riskLevel") or "").lower()
        state = str(raw.get("riskState") or "")
        if level == "none":
            return "risk level none"
        if state.lower() in {s.lower() for s in self.config.inactive_risk_states}:
            return f"risk state {state}"
        return ""

    def _risky_user(self, tenant: _Tenant, raw: Mapping[str, Any]) -> Item:
        who = raw.get("userPrincipalName") or raw.get("displayName") or raw["id"]
        level = str(raw.get("riskLevel") or "")
        why = self._inactive_risk(raw)
        return Item(
            kind=RISKY_USER, key=str(raw["id"]), title=f"Risky user {who}",
            severity=normalize_severity(level), vendor_severity=level,
            status=str(raw.get("riskState") or ""), active=not why, resolution=why,
            tenant=tenant.label, raw=raw,
            attributes=_attrs(raw, ("userPrincipalName", "displayName",
                                    "riskLastUpdatedDateTime")),
        )

    def _detection(self, tenant: _Tenant, raw: Mapping[str, Any]) -> Item:
        what = raw.get("riskEventType") or "risk detection"
        who = raw.get("userPrincipalName") or "unknown user"
        level = str(raw.get("riskLevel") or "")
        why = self._inactive_risk(raw)
        return Item(
            kind=RISK_DETECTION, key=str(raw["id"]), title=f"{what} for {who}",
            severity=normalize_severity(level), vendor_severity=level,
            status=str(raw.get("riskState") or ""), active=not why, resolution=why,
            tenant=tenant.label, raw=raw,
            attributes=_attrs(raw, ("userPrincipalName", "riskEventType", "ipAddress",
                                    "location", "detectedDateTime")),
        )

    def _alert(self, tenant: _Tenant, raw: Mapping[str, Any]) -> Item:
        status = str(raw.get("status") or "")
        severity = str(raw.get("severity") or "")
        resolved = status.lower() in {s.lower() for s in self.config.resolved_alert_statuses}
        return Item(
            kind=SECURITY_ALERT, key=str(raw["id"]),
            title=str(raw.get("title") or f"Security alert {raw['id']}"),
            severity=normalize_severity(severity), vendor_severity=severity, status=status,
            active=not resolved, resolution=f"alert status {status}" if resolved else "",
            tenant=tenant.label, raw=raw,
            attributes=_attrs(raw, ("category", "createdDateTime")),
        )

    # -- policies ---------------------------------------------------------------------------

    async def _policies(self, tenant: _Tenant, parts: SweepParts) -> None:
        size = 100

        def convert(raw: Mapping[str, Any], policy: _Policy) -> Item:
            return self._policy(tenant, raw, policy)

        async def fetch(page: int) -> Page[Item]:
            body = await tenant.client.get_json("/tenants/me/policies",
                                                {"page": page, "limit": size})
            parsed = validate(_Policies, body, f"GET /tenants/me/policies page {page}")
            rows = to_items(parsed.data, _Policy, convert, source=self.name, kind=POLICY,
                            at="data", id_field="key", first=(page - 1) * size)
            meta = parsed.meta
            if meta is None:  # not a paged answer: everything is here
                return Page(rows, len(rows), 1)
            return Page(rows, meta.total,
                        page_count(meta.total, meta.limit or size, meta.totalPages))

        swept = await numbered(fetch, lambda item: item.key, what="policies")
        parts.add(POLICY, swept.rows.values(), swept.complete)
        parts.notes.extend(swept.notes)

    def _policy(self, tenant: _Tenant, raw: Mapping[str, Any], policy: _Policy) -> Item:
        status = "compliant" if policy.compliant else "non-compliant"
        return Item(
            kind=POLICY, key=policy.key, title=policy.title or policy.key,
            severity=self.config.policy_severity, status=status, active=not policy.compliant,
            resolution="policy is compliant" if policy.compliant else "",
            tenant=tenant.label, raw=raw, attributes=_attrs(raw, ("current", "secure")),
        )


class _ResultReader:
    """One scan's results of one tenant as items: `read` for a listed result whose fields have
    the shapes `_Result` demands (no pydantic: 2,000 results a tenant and scan, where its
    validation and model instance cost as much as the mapping), `to_item` for a row pydantic
    had to validate (`rows.to_items` sends it there when `read` turns it down, so a bad row is
    skipped and reported exactly as it always was). Both map through `_map`."""

    def __init__(self, label: str, scan: _Scan, skipped_resolves: bool,
                 severities: Remembered[str, Severity]) -> None:
        self._label = label
        self._scan_id = scan.id
        self._completed_at = scan.completed_at
        self._severities = severities

        def verdict(word: str) -> tuple[str, bool, bool, str]:
            """(status, active, judged, resolution) of a result word."""
            result = word.strip().lower()
            # Only a verdict resolves; an unknown word leaves the test as it was.
            judged = result in ("failed", "passed") or (result == "skipped"
                                                        and skipped_resolves)
            return (result, result == "failed", judged,
                    f"test {result} in scan {scan.id}" if result != "failed" else "")

        self._verdicts: Remembered[str, tuple[str, bool, bool, str]] = Remembered(verdict)

    def read(self, raw: Any) -> Item | None:
        """A listed result as an item, or None when a field is not the shape `_Result`
        demands. The checks are pydantic's for JSON values: only a JSON string is a `str` (no
        number, no bool), `id` and `test_id` must not be empty, and `title`, `severity`,
        `framework` may also be null or absent."""
        if type(raw) is not dict:
            return None
        ident, test_id, result, title, severity, framework, tool, help_url = _result_values(raw)
        if (type(ident) is not str or not ident or type(test_id) is not str or not test_id
                or type(result) is not str
                or (title is not None and type(title) is not str)
                or (severity is not None and type(severity) is not str)
                or (framework is not None and type(framework) is not str)):
            return None
        return self._map(raw, test_id, result, title, severity, framework, tool, help_url)

    def to_item(self, raw: Mapping[str, Any], row: _Result) -> Item:
        get = raw.get
        return self._map(raw, row.test_id, row.result, row.title, row.severity,
                         get("framework"), get("source_tool"), get("help_url"))

    def _map(self, raw: Mapping[str, Any], test_id: str, result: str, title: str | None,
             severity: str | None, framework: Any, tool: Any, help_url: Any) -> Item:
        status, active, judged, resolution = self._verdicts[result]
        # The attributes in `_RESULT_ATTRS` order, nulls left out, then the scan's; the usual
        # shape (all strings) built in one go, anything not a string through json_scalar.
        attrs: dict[str, JSONScalar]
        if type(framework) is str and type(tool) is str and type(help_url) is str:
            attrs = {"framework": framework, "source_tool": tool, "help_url": help_url,
                     "scan_id": self._scan_id, "scan_completed_at": self._completed_at}
        else:
            attrs = {}
            for k, v in zip(_RESULT_ATTRS, (framework, tool, help_url), strict=True):
                if v is not None:
                    attrs[k] = v if type(v) is str else json_scalar(v)
            attrs["scan_id"] = self._scan_id
            attrs["scan_completed_at"] = self._completed_at
        level: Severity = "medium" if severity is None else self._severities[severity]
        # Positional: see rows.ITEM_ORDER.
        return Item(TEST, test_id, title or test_id, level, active, severity or "", status,
                    self._label, resolution, judged, attrs, raw)


def _signal(tenant: _Tenant, to_item: Callable[[_Tenant, Mapping[str, Any]], Item]
            ) -> Callable[[Mapping[str, Any], _Signal], Item]:
    """A threat row (validated to have the id every signal needs) as an item."""

    def convert(raw: Mapping[str, Any], _: _Signal) -> Item:
        return to_item(tenant, raw)

    return convert


def _moment(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(stamp: str | None) -> float | None:
    """Seconds since an ISO 8601 time, or None when there is none we can read."""
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, time.time() - moment.timestamp())
