"""Aether365 simulator: Microsoft 365 posture scans, identity-risk snapshots and policies.

Follows vendor-docs/aether365-*.txt and VENDOR_NOTES: Bearer tokens each bound to one tenant,
120 req/min per token, the `{success, data, meta?}` envelope and `{success: false, error: {code,
message}}` errors. Scan results are immutable snapshots: `run_scan` copies the tenant's current
test results into a new completed scan with new result ids (only `test_id` is stable), which is
why the bridge keys results by `test_id` and sweeps once per new completed scan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from random import Random
from typing import Any

from aiohttp import web

from bridge.sim.common import (
    PRINCIPAL,
    Clock,
    Principal,
    SimError,
    SimWorld,
    Timeline,
    bearer_token,
    build_app,
    int_param,
    json_response,
    page_slice,
    rand_uuid,
    retry_after_value,
    total_pages,
)

Record = dict[str, Any]

RESULT_FIELDS = ("test_id", "title", "result", "severity", "framework", "help_url",
                 "remediation_steps", "source_tool")
RESULTS = ("passed", "failed", "skipped")
TEST_SEVERITIES = ("critical", "high", "medium", "low")
SCAN_STATUSES = ("in_progress", "completed", "failed")
SOURCE_STATES = ("ok", "needsConsent", "notLicensed", "error")
THREAT_CATEGORIES = ("riskyUsers", "riskDetections", "securityAlerts")
FRAMEWORKS = ("CIS M365", "NIST 800-53", "ISO 27001", "Essential Eight")
SOURCE_TOOLS = ("Maester", "ScubaGear", "Aether365")
_TEST_TITLES = (
    "MFA is enforced for all administrators",
    "Legacy authentication is blocked",
    "Mailbox auditing is enabled",
    "External sharing is restricted to known domains",
    "Self-service password reset is enabled",
    "Guest users cannot invite other guests",
    "Unified audit log search is enabled",
    "DKIM is enabled for all domains",
    "Safe Links is enabled for Office apps",
    "Users cannot consent to unverified apps",
    "Break-glass accounts are excluded from Conditional Access",
    "Password expiration policy is disabled",
    "Anti-phishing policy protects priority users",
    "Teams external access is restricted",
    "SharePoint anonymous links expire",
)
_POLICIES: tuple[tuple[str, str, Any, Any], ...] = (
    ("securityDefaults", "Security defaults enabled", False, True),
    ("legacyAuthBlocked", "Legacy authentication blocked", False, True),
    ("guestInviteRestrictions", "Who can invite guests", "everyone", "adminsAndGuestInviters"),
    ("externalSharing", "SharePoint external sharing", "anyone", "existingGuests"),
    ("userConsentToApps", "Users can consent to apps", True, False),
)

_WEAK: dict[str, Any] = {key: weak for key, _, weak, _ in _POLICIES}


@dataclass
class Tenant:
    """One customer tenant: its tests, scans, identity-risk signals and policies."""

    id: str
    name: str
    ms_tenant_id: str
    connected: bool = True
    ai_pilot_connected: bool = True
    tests: dict[str, Record] = field(default_factory=dict)  # test_id -> current result
    scan_ids: list[str] = field(default_factory=list)  # oldest first; served newest first
    threats: dict[str, dict[str, Record]] = field(
        default_factory=lambda: {category: {} for category in THREAT_CATEGORIES})
    sources: dict[str, str] = field(
        default_factory=lambda: dict.fromkeys(THREAT_CATEGORIES, "ok"))
    policies: dict[str, Record] = field(default_factory=dict)
    # Seconds until the plan's quota resets while it is exhausted (every call answers 429
    # "Plan limit reached"), else None.
    quota_reset: float | None = None


class Aether365World(SimWorld):
    """Several tenants, each reached by its own token(s)."""

    vendor = "aether365"
    prefix = ""
    rate_limit_code = "RATE_LIMIT_EXCEEDED"

    def __init__(
        self,
        *,
        tokens: Mapping[str, str] | None = None,
        seed: int = 0,
        rate_limit: int = 120,
        rate_window: float = 60.0,
        send_retry_after: bool = True,
        omit_total_pages: bool = False,
        clock: Clock | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(rate_limit=rate_limit, rate_window=rate_window, clock=clock,
                         send_retry_after=send_retry_after, seed=seed)
        self.timeline = Timeline(now)
        # VENDOR_NOTES: `meta.totalPages` may be missing; clients must compute it.
        self.omit_total_pages = omit_total_pages
        self.tokens: dict[str, str] = {}
        self.expired: set[str] = set()
        self.tenants: dict[str, Tenant] = {}
        self.scans: dict[str, Record] = {}
        self.results: dict[str, list[Record]] = {}
        for token, tenant_id in (tokens or {}).items():
            if tenant_id not in self.tenants:
                self.add_tenant(tenant_id)
            self.tokens[token] = tenant_id

    # -- tenants and tokens -----------------------------------------------------------------

    def add_tenant(
        self, tenant_id: str | None = None, *, token: str | None = None, name: str | None = None
    ) -> Tenant:
        tenant_id = tenant_id or rand_uuid(self.rng)
        tenant = Tenant(id=tenant_id, name=name or f"Tenant {len(self.tenants) + 1}",
                        ms_tenant_id=rand_uuid(self.rng))
        self.tenants[tenant_id] = tenant
        if token is not None:
            self.tokens[token] = tenant_id
        self.touch()
        return tenant

    def tenant(self, tenant_id: str) -> Tenant:
        return self.tenants[tenant_id]

    def expire(self, token: str) -> None:
        """The token now answers 401 AUTH_EXPIRED_TOKEN."""
        self.expired.add(token)

    def renew(self, token: str) -> None:
        self.expired.discard(token)

    def revoke(self, token: str) -> None:
        """The token is deleted: 401 AUTH_INVALID_TOKEN."""
        self.tokens.pop(token, None)

    def disconnect(self, tenant_id: str) -> None:
        """Microsoft consent withdrawn: `/tenants/me/...` answers 403 TENANT_NOT_CONNECTED."""
        self.tenants[tenant_id].connected = False

    def reconnect(self, tenant_id: str) -> None:
        self.tenants[tenant_id].connected = True

    # -- tests and scans --------------------------------------------------------------------

    def set_test(
        self,
        tenant_id: str,
        test_id: str,
        result: str = "failed",
        *,
        severity: str | None = None,
        title: str | None = None,
        framework: str | None = None,
        **extra: Any,
    ) -> Record:
        """Create or update a test's current result; seen by the next `run_scan` only."""
        tests = self.tenants[tenant_id].tests
        test = tests.get(test_id)
        if test is None:
            rng = self.rng
            test = tests[test_id] = {
                "test_id": test_id, "title": rng.choice(_TEST_TITLES),
                "severity": rng.choice(TEST_SEVERITIES), "framework": rng.choice(FRAMEWORKS),
                "help_url": f"https://docs.aether365.io/tests/{test_id}",
                "remediation_steps": f"See the guidance for {test_id} and apply the fix.",
                "source_tool": rng.choice(SOURCE_TOOLS),
            }
        test["result"] = result
        given = {"severity": severity, "title": title, "framework": framework, **extra}
        test.update({k: v for k, v in given.items() if v is not None})
        return test

    def remove_test(self, tenant_id: str, test_id: str) -> None:
        del self.tenants[tenant_id].tests[test_id]

    def populate(self, tenant_id: str, tests: int = 30, failing: int = 10) -> None:
        """`tests` tests of which `failing` fail, the rest mostly pass (a few skipped)."""
        rng = self.rng
        start = len(self.tenants[tenant_id].tests)
        for n in range(tests):
            result = "failed" if n < failing else rng.choices(("passed", "skipped"), (9, 1))[0]
            self.set_test(tenant_id, f"AE.{start + n + 1001}", result,
                          title=_TEST_TITLES[(start + n) % len(_TEST_TITLES)])

    def start_scan(self, tenant_id: str, scan_type: str = "compliance") -> Record:
        """An in-progress scan: listed, but without results until `run_scan(scan_id=...)`."""
        tenant = self.tenants[tenant_id]
        scan: Record = {
            "id": rand_uuid(self.rng), "tenant_id": tenant_id, "scan_type": scan_type,
            "status": "in_progress", "started_at": self.timeline.stamp(), "completed_at": None,
            "pass_count": 0, "fail_count": 0, "skip_count": 0, "score": None,
        }
        self.scans[scan["id"]] = scan
        self.results[scan["id"]] = []
        tenant.scan_ids.append(scan["id"])
        self.touch()
        return scan

    def _pending(self, tenant_id: str, scan_id: str | None, scan_type: str) -> Record:
        scan = self.scans.get(scan_id or "")
        if scan is None or scan["tenant_id"] != tenant_id or scan["status"] != "in_progress":
            return self.start_scan(tenant_id, scan_type)
        return scan

    def run_scan(
        self, tenant_id: str, *, scan_id: str | None = None, scan_type: str = "compliance",
        only: Iterable[str] | None = None,
    ) -> Record:
        """Complete a scan (the in-progress `scan_id`, else a new one) from the current tests
        (`only` these test ids: an exposure scan runs other tests than a compliance scan)."""
        scan = self._pending(tenant_id, scan_id, scan_type)
        wanted = None if only is None else set(only)
        tests = [t for t in self.tenants[tenant_id].tests.values()
                 if wanted is None or t["test_id"] in wanted]
        results = [self._result(scan["id"], test) for test in tests]
        counts = {r: sum(1 for x in results if x["result"] == r) for r in RESULTS}
        judged = counts["passed"] + counts["failed"]
        scan.update(status="completed", completed_at=self.timeline.stamp(),
                    pass_count=counts["passed"], fail_count=counts["failed"],
                    skip_count=counts["skipped"],
                    score=round(100 * counts["passed"] / judged) if judged else 0)
        self.results[scan["id"]] = results
        self.touch()
        return scan

    def _result(self, scan_id: str, test: Record) -> Record:
        """A result row: a new id every scan, the test's fields in the documented order."""
        row: Record = {"id": rand_uuid(self.rng), "scan_id": scan_id}
        row.update((name, test.get(name)) for name in RESULT_FIELDS)
        row.update(test)
        return row

    def fail_scan(self, tenant_id: str, *, scan_id: str | None = None,
                  scan_type: str = "compliance") -> Record:
        scan = self._pending(tenant_id, scan_id, scan_type)
        scan.update(status="failed", completed_at=self.timeline.stamp())
        self.touch()
        return scan

    def latest_completed(self, tenant_id: str) -> Record | None:
        for scan_id in reversed(self.tenants[tenant_id].scan_ids):
            if self.scans[scan_id]["status"] == "completed":
                return self.scans[scan_id]
        return None

    def exhaust_quota(self, tenant_id: str, reset_in: float = 3600.0) -> None:
        """The plan's quota is used up: every call of the tenant answers 429 with
        SCAN_PLAN_LIMIT_REACHED "Plan limit reached" (the reference's meaning of 429) and a
        Retry-After of `reset_in`, until `restore_quota`."""
        self.tenants[tenant_id].quota_reset = reset_in

    def restore_quota(self, tenant_id: str) -> None:
        self.tenants[tenant_id].quota_reset = None

    # -- threats and policies ---------------------------------------------------------------

    def _add_threat(self, tenant_id: str, category: str, record: Record) -> Record:
        self.tenants[tenant_id].threats[category][record["id"]] = record
        self.touch()
        return record

    def _upn(self) -> str:
        first = self.rng.choice(("alex", "sam", "kim", "jo", "robin", "noa", "lee"))
        return f"{first}.{self.rng.randint(1, 999)}@contoso.example"

    def add_risky_user(self, tenant_id: str, *, user_id: str | None = None,
                       upn: str | None = None, risk_level: str = "high",
                       risk_state: str = "atRisk", display_name: str | None = None) -> Record:
        upn = upn or self._upn()
        return self._add_threat(tenant_id, "riskyUsers", {
            "id": user_id or rand_uuid(self.rng), "userPrincipalName": upn,
            "displayName": display_name or upn.split("@")[0].replace(".", " ").title(),
            "riskLevel": risk_level, "riskState": risk_state,
            "riskLastUpdatedDateTime": self.timeline.stamp(),
        })

    def update_risky_user(self, tenant_id: str, user_id: str, **changes: Any) -> Record:
        """Change e.g. `riskLevel` or `riskState`; bumps `riskLastUpdatedDateTime`."""
        changes.setdefault("riskLastUpdatedDateTime", self.timeline.stamp())
        return self.update_threat(tenant_id, "riskyUsers", user_id, **changes)

    def add_risk_detection(self, tenant_id: str, *, detection_id: str | None = None,
                           upn: str | None = None, risk_event_type: str = "unfamiliarFeatures",
                           risk_level: str = "medium", ip_address: str | None = None,
                           location: str = "Amsterdam, NL") -> Record:
        rng = self.rng
        return self._add_threat(tenant_id, "riskDetections", {
            "id": detection_id or rand_uuid(rng), "userPrincipalName": upn or self._upn(),
            "riskEventType": risk_event_type, "riskLevel": risk_level,
            "detectedDateTime": self.timeline.stamp(),
            "ipAddress": ip_address or f"203.0.113.{rng.randint(1, 254)}",
            "location": location,
        })

    def add_alert(self, tenant_id: str, *, alert_id: str | None = None,
                  title: str = "Suspicious inbox forwarding rule", severity: str = "medium",
                  status: str = "new", category: str = "Exfiltration") -> Record:
        return self._add_threat(tenant_id, "securityAlerts", {
            "id": alert_id or rand_uuid(self.rng), "title": title, "severity": severity,
            "status": status,
            "createdDateTime": self.timeline.stamp(), "category": category,
        })

    def update_threat(self, tenant_id: str, category: str, item_id: str, **changes: Any) -> Record:
        """Change any field of an existing risky user, detection or alert."""
        record = self.tenants[tenant_id].threats[category][item_id]
        record.update(changes)
        self.touch()
        return record

    def update_alert(self, tenant_id: str, alert_id: str, **changes: Any) -> Record:
        return self.update_threat(tenant_id, "securityAlerts", alert_id, **changes)

    def remove_threat(self, tenant_id: str, category: str, item_id: str) -> None:
        del self.tenants[tenant_id].threats[category][item_id]
        self.touch()

    def remove_risky_user(self, tenant_id: str, user_id: str) -> None:
        self.remove_threat(tenant_id, "riskyUsers", user_id)

    def remove_risk_detection(self, tenant_id: str, detection_id: str) -> None:
        self.remove_threat(tenant_id, "riskDetections", detection_id)

    def remove_alert(self, tenant_id: str, alert_id: str) -> None:
        self.remove_threat(tenant_id, "securityAlerts", alert_id)

    def set_source(self, tenant_id: str, category: str, state: str) -> None:
        """`ok | needsConsent | notLicensed | error`; a non-ok category is served empty."""
        if category not in THREAT_CATEGORIES:
            raise KeyError(category)
        self.tenants[tenant_id].sources[category] = state

    def set_policy(self, tenant_id: str, key: str, *, title: str | None = None,
                   current: Any = None, secure: Any = None,
                   compliant: bool | None = None) -> Record:
        """Create or update a policy; `compliant` defaults to `current == secure`."""
        policies = self.tenants[tenant_id].policies
        policy = policies.setdefault(key, {"key": key, "title": title or key, "current": None,
                                           "secure": None, "compliant": False})
        given = {"title": title, "current": current, "secure": secure}
        policy.update({k: v for k, v in given.items() if v is not None})
        policy["compliant"] = (policy["current"] == policy["secure"] if compliant is None
                               else compliant)
        self.touch()
        return policy

    def remove_policy(self, tenant_id: str, key: str) -> None:
        del self.tenants[tenant_id].policies[key]

    def default_policies(self, tenant_id: str, compliant: int = 2) -> None:
        """The stock policy set, the first `compliant` of them hardened."""
        for n, (key, title, weak, secure) in enumerate(_POLICIES):
            self.set_policy(tenant_id, key, title=title,
                            current=secure if n < compliant else weak, secure=secure)

    # -- views ------------------------------------------------------------------------------

    def results_view(self, scan_id: str, result: str, severity: str,
                     framework: str) -> list[Record]:
        """A scan's results filtered by lower-cased values, compared case-insensitively."""
        wanted = [(n, v) for n, v in (("result", result), ("severity", severity),
                                      ("framework", framework)) if v]
        rows = self.results[scan_id]
        if not wanted:
            return rows
        return self.view(("results", scan_id, *wanted), lambda: [
            r for r in rows if all(str(r[n]).lower() == v for n, v in wanted)])

    def threats_view(self, tenant: Tenant) -> Record:
        view: Record = {"aiPilotConnected": tenant.ai_pilot_connected,
                        "msTenantId": tenant.ms_tenant_id}
        for category in THREAT_CATEGORIES:
            ok = tenant.sources[category] == "ok"
            view[category] = list(tenant.threats[category].values()) if ok else []
        view["sources"] = dict(tenant.sources)
        return view

    def meta(self, total: int, page: int, limit: int) -> Record:
        meta: Record = {"total": total, "page": page, "limit": limit}
        if not self.omit_total_pages:
            meta["totalPages"] = total_pages(total, limit)
        return meta

    # -- SimWorld hooks ---------------------------------------------------------------------

    def authenticate(self, request: web.Request) -> Principal | web.Response:
        present, token = bearer_token(request)
        if not present:
            return self.error(401, "AUTH_MISSING_TOKEN", "Authorization header not present")
        if token is None or token not in self.tokens:
            return self.error(401, "AUTH_INVALID_TOKEN", "Token could not be verified")
        if token in self.expired:
            return self.error(401, "AUTH_EXPIRED_TOKEN", "Token has expired")
        tenant_id = self.tokens[token]
        if tenant_id not in self.tenants:
            return self.error(404, "TENANT_NOT_FOUND", "Tenant does not exist")
        reset = self.tenants[tenant_id].quota_reset
        if reset is not None:
            return self.error(429, "SCAN_PLAN_LIMIT_REACHED", "Plan limit reached",
                              {"Retry-After": retry_after_value(reset)})
        return Principal(limit_key=f"token:{token}", tenant=tenant_id)

    def error_body(self, status: int, code: str, message: str) -> Record:
        return {"success": False, "error": {"code": code, "message": message}}

    def drift(self, request: web.Request, count: int) -> None:
        """Results: new failing results at the head of that scan; scan list: new scans."""
        tenant_id = request[PRINCIPAL].tenant
        scan_id = request.match_info.get("id")
        if scan_id in self.results:
            rows = self.results[scan_id]
            tests = self.tenants[tenant_id].tests
            for _ in range(count):
                test = self.set_test(tenant_id, f"AE.DRIFT.{len(tests) + 1}", "failed")
                rows.insert(0, self._result(scan_id, test))
            self.touch()
            return
        for _ in range(count):
            self.run_scan(tenant_id)

    def random_step(self, rng: Random) -> str:
        """Flip a test and rescan, or change a risky user, an alert or a policy."""
        if not self.tenants:
            return "aether365 idle (no tenants)"
        tenant = self.tenants[rng.choice(sorted(self.tenants))]
        tid = tenant.id
        action = rng.choices(("test", "user", "alert", "policy"), weights=(5, 2, 2, 1))[0]
        if action == "test" and tenant.tests:
            test = tenant.tests[rng.choice(sorted(tenant.tests))]
            flipped = "passed" if test["result"] == "failed" else "failed"
            self.set_test(tid, test["test_id"], flipped)
            scan = self.run_scan(tid)
            return (f"aether365 {tenant.name}: {test['test_id']} {flipped}, "
                    f"scan {scan['id']} score {scan['score']}")
        if action == "user":
            users = tenant.threats["riskyUsers"]
            if users and rng.random() < 0.5:
                uid = rng.choice(sorted(users))
                self.update_risky_user(tid, uid, riskLevel="none", riskState="remediated")
                return f"aether365 {tenant.name}: risky user {uid} remediated"
            user = self.add_risky_user(tid, risk_level=rng.choice(("low", "medium", "high")))
            return f"aether365 {tenant.name}: new risky user {user['userPrincipalName']}"
        if action == "alert":
            alerts = tenant.threats["securityAlerts"]
            if alerts and rng.random() < 0.5:
                aid = rng.choice(sorted(alerts))
                self.update_alert(tid, aid, status="resolved")
                return f"aether365 {tenant.name}: alert {aid} resolved"
            alert = self.add_alert(tid, severity=rng.choice(("low", "medium", "high")))
            return f"aether365 {tenant.name}: new alert {alert['id']}"
        if tenant.policies:
            policy = tenant.policies[rng.choice(sorted(tenant.policies))]
            weak = _WEAK.get(policy["key"])
            current = weak if policy["compliant"] and weak is not None else policy["secure"]
            self.set_policy(tid, policy["key"], current=current)
            return f"aether365 {tenant.name}: policy {policy['key']} -> {current}"
        return f"aether365 {tenant.name}: no change"


def _lower_choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str:
    """A filter value compared case-insensitively (the vendor's own example sends `Failed`)."""
    value = request.query.get(name, "").strip().lower()
    if value and value not in allowed:
        raise SimError(400, "VALIDATION_ERROR", f"{name} must be one of {', '.join(allowed)}")
    return value


class _Routes:
    def __init__(self, world: Aether365World) -> None:
        self.world = world

    def _tenant(self, request: web.Request) -> Tenant:
        tenant = self.world.tenants[request[PRINCIPAL].tenant]
        if not tenant.connected:
            raise SimError(403, "TENANT_NOT_CONNECTED", "Microsoft consent not completed")
        return tenant

    def _scan(self, request: web.Request) -> Record:
        """The scan if it exists *for this tenant*: another tenant's scan is just not found."""
        scan = self.world.scans.get(request.match_info["id"])
        if scan is None or scan["tenant_id"] != request[PRINCIPAL].tenant:
            raise SimError(404, "SCAN_NOT_FOUND", "Scan ID does not exist")
        return scan

    async def me(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        return _ok({"id": tenant.id, "name": tenant.name, "msTenantId": tenant.ms_tenant_id})

    async def scans(self, request: web.Request) -> web.Response:
        world = self.world
        tenant = self._tenant(request)
        page = int_param(request, "page", 1)
        limit = int_param(request, "limit", 20, high=100)
        status = _lower_choice(request, "status", SCAN_STATUSES)
        scan_type = request.query.get("scan_type", "").lower()
        rows = [world.scans[i] for i in reversed(tenant.scan_ids)]
        if status or scan_type:
            rows = [s for s in rows if (not status or s["status"] == status)
                    and (not scan_type or s["scan_type"] == scan_type)]
        return _ok(page_slice(rows, page, limit), world.meta(len(rows), page, limit))

    async def scan(self, request: web.Request) -> web.Response:
        return _ok(self._scan(request))

    async def results(self, request: web.Request) -> web.Response:
        scan = self._scan(request)
        page = int_param(request, "page", 1)
        limit = int_param(request, "limit", 50, high=200)
        rows = self.world.results_view(
            scan["id"], _lower_choice(request, "result", RESULTS),
            _lower_choice(request, "severity", TEST_SEVERITIES),
            request.query.get("framework", "").strip().lower())
        return _ok(page_slice(rows, page, limit), self.world.meta(len(rows), page, limit))

    async def threats(self, request: web.Request) -> web.Response:
        return _ok(self.world.threats_view(self._tenant(request)))

    async def policies(self, request: web.Request) -> web.Response:
        rows = list(self._tenant(request).policies.values())
        return _ok(rows, self.world.meta(len(rows), 1, max(1, len(rows))))


def _ok(data: Any, meta: Record | None = None) -> web.Response:
    body: Record = {"success": True, "data": data}
    if meta is not None:
        body["meta"] = meta
    return json_response(body)


def make_app(world: Aether365World) -> web.Application:
    r = _Routes(world)
    return build_app(world, [
        web.get("/tenants/me", r.me),
        web.get("/tenants/me/scans", r.scans),
        web.get("/tenants/me/threats", r.threats),
        web.get("/tenants/me/policies", r.policies),
        web.get("/scans/{id}", r.scan),
        web.get("/scans/{id}/results", r.results),
    ])

