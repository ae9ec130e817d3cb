"""ScanOrbit simulator: AWS findings, paged newest first, behind an org-wide rate limit.

Follows vendor-docs/scanorbit-api-reference.txt and VENDOR_NOTES: `X-API-Key`, 100 req/min per
organization shared by all keys, `{data, pagination}` pages, `{error, message}` errors, findings
ordered by `createdAt` descending (so inserts during a sweep shift later pages), and findings that
change only when the world says so; scans are recorded explicitly (or on every mutation with
`auto_scan=True`) because the bridge uses `/scans/recent` as its cheap change detector.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from random import Random
from typing import Any

from aiohttp import web

from bridge.sim.common import (
    Clock,
    Principal,
    SimError,
    SimWorld,
    Timeline,
    api_key,
    build_app,
    int_param,
    iso,
    json_response,
    page_slice,
    rand_uuid,
    total_pages,
)

Finding = dict[str, Any]

SEVERITIES = ("low", "medium", "high")
STATUSES = ("open", "resolved", "snoozed", "ignored")
REGIONS = ("eu-west-1", "us-east-1", "eu-central-1", "ap-southeast-1")
# Finding type -> the AWS service of the resource it is about.
FINDING_TYPES: dict[str, str] = {
    "orphaned_volume": "ec2",
    "security_group_open_port": "ec2",
    "ssl_expiry": "acm",
    "iam_key_old": "iam",
    "orphaned_eip": "ec2",
    "data_residency_violation": "s3",
    "orphaned_snapshot": "ec2",
}
_TYPE_NAMES = tuple(FINDING_TYPES)
FINDING_FILTERS = ("status", "severity", "type", "awsAccountId", "resourceId")
RESOURCE_FILTERS = ("awsAccountId", "region", "service", "state")


def _describe(kind: str, rng: Random, resource: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A plausible summary and type-specific details for a finding."""
    region = str(resource["region"])
    if kind == "orphaned_volume":
        size = rng.choice((8, 20, 100, 500))
        return (f"EBS volume gp3 {size} GiB is not attached to any instance",
                {"volumeSize": size, "volumeType": "gp3", "availabilityZone": f"{region}a"})
    if kind == "security_group_open_port":
        port = rng.choice((22, 3389, 5432, 6379, 9200))
        return (f"Security group allows 0.0.0.0/0 on port {port}",
                {"port": port, "protocol": "tcp", "cidr": "0.0.0.0/0",
                 "groupId": f"sg-{rng.getrandbits(64):016x}"[:20]})
    if kind == "ssl_expiry":
        days = rng.randint(1, 30)
        return (f"TLS certificate for {resource['name']} expires in {days} days",
                {"daysUntilExpiry": days, "domain": resource["name"]})
    if kind == "iam_key_old":
        age = rng.randint(91, 900)
        return (f"IAM access key for {resource['name']} is {age} days old",
                {"userName": resource["name"], "keyAgeDays": age})
    if kind == "orphaned_eip":
        ip = f"52.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        return f"Elastic IP {ip} is not associated", {"publicIp": ip}
    if kind == "data_residency_violation":
        return (f"S3 bucket {resource['name']} stores data outside allowed regions",
                {"region": region, "allowedRegions": ["eu-west-1", "eu-central-1"]})
    age = rng.randint(90, 1200)
    return (f"EBS snapshot is {age} days old and unused",
            {"snapshotId": f"snap-{rng.getrandbits(64):017x}"[:22], "ageDays": age})


class ScanOrbitWorld(SimWorld):
    """One ScanOrbit organization: its keys, accounts, resources, findings and scans."""

    vendor = "scanorbit"
    prefix = "/api/v1"
    rate_limit_code = "RATE_LIMIT_EXCEEDED"

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = (),
        seed: int = 0,
        rate_limit: int = 100,
        rate_window: float = 60.0,
        send_retry_after: bool = True,
        auto_scan: bool = False,
        clock: Clock | None = None,
        now: Callable[[], datetime] | None = None,
        org_name: str = "Acme Corp",
        tier: str = "team",
        accounts: int = 2,
    ) -> None:
        super().__init__(rate_limit=rate_limit, rate_window=rate_window, clock=clock,
                         send_retry_after=send_retry_after, seed=seed)
        self.api_keys: set[str] = set(api_keys)
        self.revoked: set[str] = set()
        self.auto_scan = auto_scan
        self.timeline = Timeline(now)
        self.tier = tier  # anything but "team" answers 403, as the docs say for other plans
        org_id = rand_uuid(self.rng)
        self.org: dict[str, Any] = {
            "id": org_id, "name": org_name, "slug": org_name.lower().replace(" ", "-"),
        }
        created = iso(self.timeline.peek() - timedelta(days=120))
        self.accounts: list[dict[str, Any]] = [
            {"id": rand_uuid(self.rng), "orgId": org_id, "name": f"AWS account {n + 1}",
             "awsAccountId": f"{self.rng.randrange(10**11, 10**12)}", "status": "ok",
             "lastError": None, "lastScanAt": None,
             "enabledScanners": ["ec2", "rds", "s3", "lambda", "alb", "acm", "kms", "iam",
                                 "security_groups"],
             "createdAt": created, "updatedAt": created}
            for n in range(max(1, accounts))
        ]
        self.findings: dict[str, Finding] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self.certificates: dict[str, dict[str, Any]] = {}
        self.scans_recent: list[dict[str, Any]] = []  # oldest first; served newest first
        self.scans_active: list[dict[str, Any]] = []
        # What `lastScanId` says before any scan was recorded: the scan that found the backlog.
        self._baseline_scan = rand_uuid(self.rng)

    # -- keys -------------------------------------------------------------------------------

    def revoke(self, key: str) -> None:
        self.revoked.add(key)

    def restore(self, key: str) -> None:
        self.revoked.discard(key)
        self.api_keys.add(key)

    # -- accounts ---------------------------------------------------------------------------

    def set_account(self, account_id: str, **fields: Any) -> dict[str, Any]:
        """Change a connected account (`status="error", lastError="AccessDenied..."`)."""
        account = next(a for a in self.accounts if a["id"] == account_id)
        account.update(fields, updatedAt=self.timeline.stamp())
        return account

    def delete_account(self, account_id: str) -> None:
        """The account is disconnected: gone from `/accounts`, and its findings and scans
        keep `awsAccountId: null` (the reference's "null if account was deleted")."""
        self.accounts = [a for a in self.accounts if a["id"] != account_id]
        for finding in self.findings.values():
            if finding["awsAccountId"] == account_id:
                finding["awsAccountId"] = None
        for scan in (*self.scans_recent, *self.scans_active):
            if scan["awsAccountId"] == account_id:
                scan.update(awsAccountId=None, hasKey=False)
        self.touch()

    # -- resources --------------------------------------------------------------------------

    def add_resource(self, service: str = "ec2", **overrides: Any) -> dict[str, Any]:
        """A resource findings can point at; `overrides` replace any field."""
        rng = self.rng
        rid = rand_uuid(rng)
        account = rng.choice(self.accounts)
        region = rng.choice(REGIONS)
        name = {
            "acm": f"api{rng.randint(1, 99)}.example.com",
            "iam": f"svc-user-{rng.randint(1, 999)}",
            "s3": f"data-bucket-{rng.getrandbits(24):06x}",
        }.get(service, f"{service}-{rng.getrandbits(24):06x}")
        stamp = iso(self.timeline.peek())
        resource: dict[str, Any] = {
            "id": rid, "orgId": self.org["id"], "awsAccountId": account["id"],
            "resourceId": f"arn:aws:{service}:{region}:{account['awsAccountId']}:{name}",
            "service": service, "region": region, "name": name,
            "state": "issued" if service == "acm" else "available",
            "tags": {"env": rng.choice(("production", "staging")), "team": "platform"},
            "costEstimateMonthly": f"{rng.uniform(0, 90):.2f}", "lastSeenAt": stamp,
            "createdAt": stamp, "updatedAt": stamp,
        }
        resource.update(overrides)
        self.resources[rid] = resource
        return resource

    def _certificate_for(self, resource: dict[str, Any], days_left: int) -> dict[str, Any]:
        not_after = self.timeline.peek() + timedelta(days=days_left)
        cert = {
            "id": rand_uuid(self.rng), "primaryDomain": resource["name"],
            "altNames": [f"*.{resource['name'].split('.', 1)[-1]}"],
            "notBefore": iso(not_after - timedelta(days=365)), "notAfter": iso(not_after),
            "issuer": "Amazon", "algorithm": "RSA-2048", "source": "acm",
            "lastSeenAt": iso(self.timeline.peek()),
        }
        self.certificates[cert["id"]] = cert
        return cert

    # -- findings ---------------------------------------------------------------------------

    def _new_finding(self, created: str, overrides: dict[str, Any],
                     pool: dict[str, list[dict[str, Any]]] | None = None) -> Finding:
        """A finding about a new resource, or (bulk) about one drawn from `pool` per service."""
        rng = self.rng
        kind = str(overrides.get("type") or rng.choice(_TYPE_NAMES))
        service = FINDING_TYPES.get(kind, "ec2")
        shared = pool.get(service) if pool and kind != "ssl_expiry" else None
        resource = rng.choice(shared) if shared else self.add_resource(service)
        summary, details = _describe(kind, rng, resource)
        cert_id = None
        if kind == "ssl_expiry":
            cert_id = self._certificate_for(resource, int(details["daysUntilExpiry"]))["id"]
        last_scan = self.scans_recent[-1]["id"] if self.scans_recent else self._baseline_scan
        finding: Finding = {
            "id": rand_uuid(rng), "orgId": self.org["id"],
            "awsAccountId": resource["awsAccountId"], "resourceId": resource["id"],
            "certificateId": cert_id, "type": kind,
            "severity": rng.choices(SEVERITIES, weights=(5, 4, 2))[0],
            "summary": summary, "details": details, "status": "open", "resolvedAt": None,
            "snoozedUntil": None, "firstDetectedAt": created, "lastDetectedAt": created,
            "detectionCount": 1, "lastScanId": last_scan, "createdAt": created,
            "updatedAt": created,
        }
        finding.update(overrides)
        return finding

    def add_finding(self, **overrides: Any) -> Finding:
        """A new open finding, newest of all; any field may be overridden (severity="critical")."""
        finding = self._new_finding(self.timeline.stamp(), overrides)
        self.findings[finding["id"]] = finding
        self._changed(new=1)
        return finding

    def bulk_add(self, n: int) -> list[Finding]:
        """`n` findings back-dated one second apart (all older than anything added later)."""
        start = self.timeline.peek() - timedelta(seconds=n + 1)
        services = sorted(set(FINDING_TYPES.values()) - {"acm"})
        pool = {service: [self.add_resource(service) for _ in range(n // 50 + 1)]
                for service in services}
        added = []
        for i in range(n):
            finding = self._new_finding(iso(start + timedelta(seconds=i)), {}, pool)
            self.findings[finding["id"]] = finding
            added.append(finding)
        self._changed(new=n)
        return added

    def get(self, finding_id: str) -> Finding:
        return self.findings[finding_id]

    def _update(self, finding_id: str, **fields: Any) -> Finding:
        finding = self.findings[finding_id]
        finding.update(fields, updatedAt=self.timeline.stamp())
        return finding

    def set_status(
        self, finding_id: str, status: str, *, snoozed_until: str | None = None
    ) -> Finding:
        """Any status (the vendor's four, or an unknown word a test wants to see handled)."""
        finding = self.findings[finding_id]
        before = finding["status"]
        stamp = self.timeline.stamp()
        if status == "snoozed" and snoozed_until is None:
            snoozed_until = iso(self.timeline.peek() + timedelta(days=7))
        finding.update(status=status, updatedAt=stamp,
                       resolvedAt=stamp if status == "resolved" else None,
                       snoozedUntil=snoozed_until if status == "snoozed" else None)
        self._changed(resolved=int(status == "resolved" and before != "resolved"))
        return finding

    def resolve(self, finding_id: str) -> Finding:
        return self.set_status(finding_id, "resolved")

    def reopen(self, finding_id: str) -> Finding:
        """Open again, as a scan that re-detects it would."""
        finding = self.findings[finding_id]
        stamp = self.timeline.stamp()
        self._update(finding_id, status="open", resolvedAt=None, snoozedUntil=None,
                     lastDetectedAt=stamp, detectionCount=finding["detectionCount"] + 1)
        self._changed(new=1)
        return finding

    def snooze(self, finding_id: str, days: int = 7) -> Finding:
        until = iso(self.timeline.peek() + timedelta(days=days))
        return self.set_status(finding_id, "snoozed", snoozed_until=until)

    def set_severity(self, finding_id: str, severity: str) -> Finding:
        finding = self._update(finding_id, severity=severity)
        self._changed()
        return finding

    def remove(self, finding_id: str) -> Finding:
        """The finding vanishes: absent from lists, 404 by id."""
        finding = self.findings.pop(finding_id)
        self._changed(resolved=1)
        return finding

    def _changed(self, new: int = 0, resolved: int = 0) -> None:
        self.touch()
        if self.auto_scan:
            self.complete_scan(findings_new=new, findings_resolved=resolved)

    # -- scans ------------------------------------------------------------------------------

    def start_scan(self) -> dict[str, Any]:
        """A running scan, listed by `/scans/active` until `complete_scan(scan_id=...)`."""
        stamp = self.timeline.stamp()
        scan = {
            "id": rand_uuid(self.rng), "orgId": self.org["id"],
            "awsAccountId": self.rng.choice(self.accounts)["id"], "status": "running",
            "hasKey": True, "startedAt": stamp, "completedAt": None,
            "resourcesDiscovered": 0, "resourcesDelta": 0, "findingsNew": 0,
            "findingsResolved": 0, "errorMessage": None, "createdAt": stamp,
        }
        self.scans_active.append(scan)
        return scan

    def complete_scan(
        self,
        findings_new: int = 0,
        findings_resolved: int = 0,
        *,
        scan_id: str | None = None,
        status: str = "complete",
    ) -> dict[str, Any]:
        """Record a finished scan (the active one named by `scan_id`, else a new one)."""
        scan = next((s for s in self.scans_active if s["id"] == scan_id), None)
        if scan is None:
            scan = self.start_scan()
        self.scans_active.remove(scan)
        stamp = self.timeline.stamp()
        scan.update(
            status=status, completedAt=stamp, resourcesDiscovered=len(self.resources),
            findingsNew=findings_new, findingsResolved=findings_resolved,
            errorMessage="Simulated scan error" if status == "error" else None,
        )
        self.scans_recent.append(scan)
        for account in self.accounts:
            if account["id"] == scan["awsAccountId"]:
                account.update(lastScanAt=stamp, updatedAt=stamp)
        return scan

    # -- views ------------------------------------------------------------------------------

    def ordered(self) -> list[Finding]:
        """All findings newest first (createdAt desc, then id)."""

        def newest_first() -> list[Finding]:
            items = sorted(self.findings.values(), key=lambda f: f["id"])
            items.sort(key=lambda f: f["createdAt"], reverse=True)  # stable: id breaks ties
            return items

        return self.view("ordered", newest_first)

    def listing(self, filters: dict[str, str | None]) -> list[Finding]:
        """Findings matching the query's filters, in page order."""
        wanted = [(name, filters[name]) for name in FINDING_FILTERS
                  if filters.get(name) is not None]
        if not wanted:
            return self.ordered()
        return self.view(("findings", *wanted), lambda: [
            f for f in self.ordered() if all(f.get(n) == v for n, v in wanted)])

    def stats_view(self) -> dict[str, Any]:
        findings = self.findings.values()
        return {
            "totalFindings": len(self.findings),
            "byStatus": dict(Counter(str(f["status"]) for f in findings)),
            "bySeverity": dict(Counter(str(f["severity"]) for f in findings)),
            "byType": dict(Counter(str(f["type"]) for f in findings)),
        }

    # -- SimWorld hooks ---------------------------------------------------------------------

    def authenticate(self, request: web.Request) -> Principal | web.Response:
        key = api_key(request)
        if key is None:
            return self.error(401, "UNAUTHORIZED", "Missing API key: send the X-API-Key header")
        if key not in self.api_keys or key in self.revoked:
            return self.error(401, "UNAUTHORIZED", "Invalid or revoked API key")
        if self.tier != "team":
            return self.error(403, "FORBIDDEN", "Organization does not have Team plan access")
        # Every key of the organization shares one rate limit.
        return Principal(limit_key=f"org:{self.org['id']}")

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        return {"error": code, "message": message}

    def drift(self, request: web.Request, count: int) -> None:
        if request.path.endswith("/scans/recent"):
            for _ in range(count):
                self.complete_scan()
            return
        for _ in range(count):
            self.add_finding()

    def random_step(self, rng: Random) -> str:
        """Add, resolve, re-rate, snooze or reopen one finding, then complete a scan."""
        open_ids = sorted(i for i, f in self.findings.items() if f["status"] == "open")
        closed_ids = sorted(i for i, f in self.findings.items() if f["status"] != "open")
        action = rng.choices(("add", "resolve", "severity", "snooze", "reopen"),
                             weights=(4, 3, 2, 1, 1))[0]
        if action in ("resolve", "severity", "snooze") and not open_ids:
            action = "add"
        if action == "reopen" and not closed_ids:
            action = "add"
        new = resolved = 0
        auto, self.auto_scan = self.auto_scan, False
        try:
            if action == "add":
                finding = self.add_finding(severity=rng.choices(
                    ("low", "medium", "high", "critical"), weights=(4, 4, 2, 1))[0])
                new = 1
            elif action == "resolve":
                finding = self.resolve(rng.choice(open_ids))
                resolved = 1
            elif action == "severity":
                target = self.findings[rng.choice(open_ids)]
                choices = [s for s in SEVERITIES if s != target["severity"]]
                finding = self.set_severity(target["id"], rng.choice(choices))
            elif action == "snooze":
                finding = self.snooze(rng.choice(open_ids))
            else:
                finding = self.reopen(rng.choice(closed_ids))
                new = 1
        finally:
            self.auto_scan = auto
        self.complete_scan(findings_new=new, findings_resolved=resolved)
        return f"scanorbit {action} {finding['id']} ({finding['severity']}, {finding['status']})"


def _filters(request: web.Request, names: tuple[str, ...]) -> dict[str, str | None]:
    return {name: request.query.get(name) or None for name in names}


class _Routes:
    """Route handlers bound to one world."""

    def __init__(self, world: ScanOrbitWorld) -> None:
        self.world = world

    async def findings(self, request: web.Request) -> web.Response:
        page = int_param(request, "page", 1)
        limit = int_param(request, "limit", 50, high=100)
        filters = _filters(request, FINDING_FILTERS)
        status = filters["status"]
        if status is not None and status not in STATUSES:
            raise SimError(400, "VALIDATION_ERROR",
                           f"status must be one of {', '.join(STATUSES)}")
        items = self.world.listing(filters)
        return _page(items, page, limit)

    async def finding(self, request: web.Request) -> web.Response:
        world = self.world
        finding = world.findings.get(request.match_info["id"])
        if finding is None:
            raise SimError(404, "FINDING_NOT_FOUND", "No finding found with the given ID")
        resource = world.resources.get(str(finding["resourceId"]))
        certificate = world.certificates.get(str(finding["certificateId"]))
        return json_response({"data": {**finding, "resource": resource,
                                       "certificate": certificate}})

    async def finding_stats(self, request: web.Request) -> web.Response:
        return json_response({"data": self.world.stats_view()})

    async def scans_recent(self, request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 10, high=100)
        recent = self.world.scans_recent
        return json_response({"data": recent[: -limit - 1 : -1]})

    async def scans_active(self, request: web.Request) -> web.Response:
        return json_response({"data": self.world.scans_active[::-1]})

    async def organization(self, request: web.Request) -> web.Response:
        return json_response({"data": {**self.world.org, "tier": self.world.tier}})

    async def accounts(self, request: web.Request) -> web.Response:
        return json_response({"data": self.world.accounts})

    async def resources(self, request: web.Request) -> web.Response:
        page = int_param(request, "page", 1)
        limit = int_param(request, "limit", 50, high=100)
        wanted = [(k, v) for k, v in _filters(request, RESOURCE_FILTERS).items() if v is not None]
        items = [r for r in self.world.resources.values()
                 if all(r.get(k) == v for k, v in wanted)]
        return _page(items, page, limit)

    async def resource(self, request: web.Request) -> web.Response:
        wanted = request.match_info["id"]
        found = self.world.resources.get(wanted) or next(
            (r for r in self.world.resources.values() if r["resourceId"] == wanted), None)
        if found is None:
            raise SimError(404, "RESOURCE_NOT_FOUND", "No resource found with the given ID")
        return json_response({"data": found})


def _page(items: list[dict[str, Any]], page: int, limit: int) -> web.Response:
    return json_response({
        "data": page_slice(items, page, limit),
        "pagination": {"page": page, "limit": limit, "total": len(items),
                       "totalPages": total_pages(len(items), limit)},
    })


def make_app(world: ScanOrbitWorld) -> web.Application:
    r = _Routes(world)
    p = world.prefix
    return build_app(world, [
        web.get(f"{p}/findings", r.findings),
        web.get(f"{p}/findings/stats", r.finding_stats),  # before {id}: first match wins
        web.get(f"{p}/findings/{{id}}", r.finding),
        web.get(f"{p}/scans/recent", r.scans_recent),
        web.get(f"{p}/scans/active", r.scans_active),
        web.get(f"{p}/organization", r.organization),
        web.get(f"{p}/accounts", r.accounts),
        web.get(f"{p}/resources", r.resources),
        web.get(f"{p}/resources/{{id}}", r.resource),
    ])
