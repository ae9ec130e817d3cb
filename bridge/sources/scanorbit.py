"""ScanOrbit: AWS findings, swept in full (the API has no "changed since" filter).

Findings are listed newest first, so findings created mid-sweep shift later pages. We dedupe
by id, and call the sweep incomplete when `total` moves between pages or the unique count does
not match it; one immediate retry usually gets a clean pass. `/scans/recent` is a cheap probe:
findings only change when a scan completes, so an unchanged latest scan skips the sweep, except
that snoozes and dismissals made by people need a re-read: every sweep while that is cheap for
the rate budget, else every `full_resweep_interval` (bridge/sources/freshness.py).
A finding's `awsAccountId` is ScanOrbit's UUID of the connected account, not the AWS account
number a SIEM knows: each full sweep reads `GET /accounts` once and attaches the 12-digit
`aws_account_number` and `account_name` (a finding of a deleted account, `awsAccountId: null`,
gets neither). The same answer is the source's coverage check: an account not `ok`, or with a
`lastError`, is an account ScanOrbit is not seeing (bridge/sources/coverage.py).
Each finding is read on its own (`bridge.sources.rows`): one we cannot read is skipped and
leaves the sweep incomplete, instead of losing its page and every page after it.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bridge.http import HttpContext, VendorClient, VendorError, url_path, validate
from bridge.model import Item, JSONScalar, Severity, Sweep, json_scalar, normalize_severity
from bridge.sources.base import ItemSink, Source, SourceConfig
from bridge.sources.coverage import SOURCE_HEALTH, Check
from bridge.sources.freshness import full_read_cursor, full_read_due
from bridge.sources.paging import Page, Pass, numbered, with_drift_retries
from bridge.sources.rows import ROW_ERRORS, Remembered, row_values, to_items

log = structlog.get_logger(__name__)

KIND = "finding"
MAX_PAGE = 100


class ScanOrbitConfig(SourceConfig):
    type: Literal["scanorbit"]
    secret_patterns = (r"sk_live_[0-9A-Za-z]{8,}",)
    base_url: str = Field(default="https://api.scanorbit.cloud/api/v1", pattern=r"^https?://")
    api_key: SecretStr
    # Keys of one organization share its 100 req/min: give them the same `org` to share a bucket.
    org: str | None = None
    page_size: int = Field(default=MAX_PAGE, ge=1, le=MAX_PAGE)
    # Vendor statuses that mean "not a live problem"; each resolves with that reason.
    inactive_statuses: tuple[str, ...] = ("resolved", "snoozed", "ignored")
    full_resweep_interval: float = Field(default=3600.0, ge=0)
    # Re-read every sweep, scan or not, while a full read costs at most this share of the
    # requests one interval allows (bridge/sources/freshness.py); 0: only every
    # full_resweep_interval.
    resweep_budget_share: float = Field(default=0.1, ge=0, le=1)
    drift_retries: int = Field(default=1, ge=0, le=5)
    # Pages requested ahead of the one being diffed (all paced by the rate limiter).
    prefetch: int = Field(default=3, ge=0, le=10)
    # Fetch `GET /findings/{id}` (resource, certificate) for up to this many new findings a
    # sweep (the budget is the sweep's, however many pages the new findings arrive in).
    enrich_new: int = Field(default=0, ge=0)
    # Read `GET /accounts` once a full sweep: account numbers and names, and coverage.
    accounts: bool = True

    def build(self, http: HttpContext) -> ScanOrbitSource:
        return ScanOrbitSource(self, http)


class _Pagination(BaseModel):
    page: int
    limit: int
    total: int = Field(ge=0)
    totalPages: int = Field(ge=0)


class _Finding(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    status: str
    severity: str | None = None
    summary: str | None = None
    type: str | None = None


class _FindingsPage(BaseModel):
    data: list[Any]  # each finding is validated on its own
    pagination: _Pagination


class _Scan(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    status: str | None = None
    completedAt: str | None = None


class _Scans(BaseModel):
    data: list[_Scan]


class _Account(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    name: str | None = None
    awsAccountId: str | None = None  # here, the 12-digit AWS account number
    status: str | None = None
    lastError: str | None = None


class _Accounts(BaseModel):
    data: list[Any]  # each account is read on its own


HEALTHY_ACCOUNT = ("ok", "active")


# Attributes taken from a finding, in this order (`_map` spells them out).
_ATTRIBUTES = ("type", "awsAccountId", "resourceId", "certificateId", "firstDetectedAt")
# What `read` takes from a listed finding: `_Finding`'s fields, then the attributes.
_LISTED = ("id", "status", "severity", "summary", *_ATTRIBUTES)
_listed = row_values(_LISTED)
_item_key = operator.attrgetter("key")
_NESTED = (("resource", ("name", "service", "region", "resourceId")),
           ("certificate", ("primaryDomain", "notAfter")))


class ScanOrbitSource(Source[ScanOrbitConfig]):
    vendor = "scanorbit"
    display_name = "ScanOrbit"
    item_kinds = (KIND, SOURCE_HEALTH)

    def __init__(self, config: ScanOrbitConfig, http: HttpContext) -> None:
        super().__init__(config)
        self.client: VendorClient = http.client(
            vendor=self.vendor,
            base_url=config.base_url,
            headers={"X-API-Key": config.api_key.get_secret_value()},
            config=config.http,
            limit_scope=config.org or config.name,
            default_per_minute=80.0,  # documented: 100/min per organization
        )
        # The current sweep's account attributes by ScanOrbit account id (computed once a
        # sweep, not per finding), and what is left of its enrichment.
        self._accounts: dict[str, dict[str, JSONScalar]] = {}
        self._enrich_left = config.enrich_new
        # Status and severity words already mapped (see `_status`).
        self._statuses: Remembered[str, tuple[str, bool, str]] = Remembered(self._status)
        self._severities: Remembered[str, Severity] = Remembered(normalize_severity)

    @property
    def kinds(self) -> tuple[str, ...]:
        return (KIND, *self.health_kinds())

    def requests(self, scope: str) -> int:
        return self.client.requests  # one scope, one client

    @property
    def enriches(self) -> bool:
        return self.config.enrich_new > 0

    def item(self, raw: Mapping[str, Any]) -> Item:
        """One finding as an item; raises (one of `ROW_ERRORS`) if it cannot be read."""
        return self.to_item(raw, _Finding.model_validate(raw))

    def to_item(self, raw: Mapping[str, Any], finding: _Finding) -> Item:
        """A finding `_Finding` accepted, as an item (the path of rows `read` turned down)."""
        get = raw.get
        return self._map(raw, finding.id, finding.status, finding.severity, finding.summary,
                         finding.type, get("awsAccountId"), get("resourceId"),
                         get("certificateId"), get("firstDetectedAt"))

    def read(self, raw: Any) -> Item | None:
        """A listed finding as an item, or None when its fields are not the shapes `_Finding`
        demands: then `to_items` has pydantic read it, so a bad row is reported exactly as it
        always was. This is the path of 100k findings a sweep, where pydantic's validation
        and its model instance cost as much as the mapping itself. The checks are pydantic's
        for JSON values: a JSON string is the only thing its `str` accepts (no number, no
        bool), `id` must not be empty, and `severity`, `summary`, `type` may also be null or
        absent."""
        if type(raw) is not dict:
            return None
        (key, status, severity, summary, kind, account_id, resource_id, certificate_id,
         first_seen) = _listed(raw)
        if (type(key) is not str or not key or type(status) is not str
                or (severity is not None and type(severity) is not str)
                or (summary is not None and type(summary) is not str)
                or (kind is not None and type(kind) is not str)):
            return None
        return self._map(raw, key, status, severity, summary, kind, account_id, resource_id,
                         certificate_id, first_seen)

    def _map(self, raw: Mapping[str, Any], key: str, status_word: str, severity: str | None,
             summary: str | None, kind: str | None, account_id: Any, resource_id: Any,
             certificate_id: Any, first_seen: Any) -> Item:
        status, active, resolution = self._statuses[status_word]
        # The attributes, in `_ATTRIBUTES` order, nulls left out; written out rather than
        # looped (100k findings a sweep), with the usual shape (all strings but a null
        # certificateId) built in one go. Anything not a string goes through json_scalar.
        attrs: dict[str, JSONScalar]
        if (type(kind) is str and type(account_id) is str and type(resource_id) is str
                and certificate_id is None and type(first_seen) is str):
            attrs = {"type": kind, "awsAccountId": account_id, "resourceId": resource_id,
                     "firstDetectedAt": first_seen}
        else:
            attrs = {}
            for k, v in zip(_ATTRIBUTES, (kind, account_id, resource_id, certificate_id,
                                          first_seen), strict=True):
                if v is not None:
                    attrs[k] = v if type(v) is str else json_scalar(v)
        if "resource" in raw or "certificate" in raw:  # only enriched findings have these
            for nested, fields in _NESTED:
                obj = raw.get(nested)
                if isinstance(obj, dict):
                    for f in fields:
                        if isinstance(obj.get(f), str):
                            attrs[f"{nested}_{f}"] = obj[f]
        # null: the account was deleted
        account = self._accounts.get(account_id) if type(account_id) is str else None
        if account:
            attrs.update(account)
        if severity is None:
            level: Severity = "medium"
        else:
            level = self._severities[severity]
        # Positional: see rows.ITEM_ORDER.
        return Item(KIND, key, summary or kind or key, level, active, severity or "", status,
                    self.config.tenant, resolution, True, attrs, raw)

    def _status(self, word: str) -> tuple[str, bool, str]:
        """(status, active, resolution) of a vendor status word (remembered in `_statuses`:
        a handful of words, 100k findings a sweep)."""
        status = word.lower()
        inactive = status in self.config.inactive_statuses
        return (status, not inactive, f"vendor status {status}" if inactive else "")

    async def poll(self, scope: str, cursor: Mapping[str, str]) -> Sweep:
        items: list[Item] = []

        async def collect(page: Sequence[Item]) -> None:
            items.extend(page)

        sweep = await self.stream(scope, cursor, collect)
        return replace(sweep, items=tuple(items))

    async def stream(self, scope: str, cursor: Mapping[str, str], emit: ItemSink) -> Sweep:
        latest = await self._latest_scan()
        cfg = self.config
        due = full_read_due(cursor, now=time.time(), full_resweep_interval=cfg.full_resweep_interval,
                            interval=cfg.interval, per_minute=self.client.limiter.rate * 60,
                            share=cfg.resweep_budget_share)
        if latest is not None and latest == cursor.get("last_scan_id") and not due:
            return Sweep(scope=scope, items=(), kinds={}, notes=("no new completed scan",))
        requests_before = self.client.requests
        self._enrich_left = self.config.enrich_new
        account_note = await self._read_accounts(scope) if self.config.accounts else None
        walk = await with_drift_retries(
            lambda: self._walk(emit), self.config.drift_retries,
            lambda spoiled: log.info("scanorbit_drift_retry", source=self.name, notes=spoiled.notes))
        complete, notes = walk.complete, list(walk.notes)
        if account_note:
            notes.append(account_note)
        new_cursor: dict[str, str] = {}
        if complete:
            new_cursor.update(full_read_cursor(time.time(), self.client.requests - requests_before))
            if latest is not None:
                new_cursor["last_scan_id"] = latest
        kinds = {KIND: complete}
        health = self.health_items(scope)
        if health:
            await emit(health)
            kinds[SOURCE_HEALTH] = True
        return Sweep(scope=scope, items=(), kinds=kinds, cursor=new_cursor, notes=tuple(notes))

    async def _read_accounts(self, scope: str) -> str | None:
        """One `GET /accounts`: the accounts findings are attached to, and the accounts
        coverage. Returns a note when it could not be read (findings then go without account
        numbers; the last coverage verdict stands)."""
        try:
            body = await self.client.get_json("/accounts")
            listed = validate(_Accounts, body, "GET /accounts")
        except VendorError as exc:
            if exc.fails_sweep:
                raise
            log.warning("scanorbit_accounts_failed", source=self.name, error=str(exc))
            self._accounts = {}
            return f"accounts: {exc}; findings carry no account numbers this sweep"
        accounts: dict[str, _Account] = {}
        unreadable = 0
        for row in listed.data:
            try:
                account = _Account.model_validate(row)
            except ROW_ERRORS:
                unreadable += 1
                continue
            accounts[account.id] = account
        self._accounts = {a.id: {k: v for k, v in (("aws_account_number", a.awsAccountId),
                                                  ("account_name", a.name)) if v}
                          for a in accounts.values()}
        self.coverage.report(scope, "accounts", [_account_check(a) for a in accounts.values()])
        return f"accounts: {unreadable} unreadable account row(s) skipped" if unreadable else None

    async def _latest_scan(self) -> str | None:
        try:
            body = await self.client.get_json("/scans/recent", {"limit": 1})
            scans = validate(_Scans, body, "GET /scans/recent")
        except VendorError as exc:
            if exc.fails_sweep:
                raise
            log.warning("scanorbit_scan_probe_failed", source=self.name, error=str(exc))
            return None
        done = [s for s in scans.data if (s.status or "complete") in ("complete", "partial")]
        return done[0].id if done else None

    async def _page(self, page: int) -> Page[Item]:
        size = self.config.page_size
        body = await self.client.get_json("/findings", {"page": page, "limit": size})
        parsed = validate(_FindingsPage, body, f"GET /findings page {page}")
        p = parsed.pagination
        rows = to_items(parsed.data, _Finding, self.to_item, source=self.name, kind=KIND,
                        at="data", first=(page - 1) * size, read=self.read)
        return Page(rows, p.total, p.totalPages)

    async def _walk(self, emit: ItemSink) -> Pass[Item]:
        return await numbered(self._page, _item_key, what="findings",
                              on_rows=emit, prefetch=self.config.prefetch)

    async def enrich(self, scope: str, items: Sequence[Item]) -> list[Item]:
        """Add resource and certificate facts to new findings, `enrich_new` a sweep in all."""
        out = list(items)
        budget = min(self._enrich_left, len(out))
        self._enrich_left -= budget
        for i, item in enumerate(out[:budget]):
            try:
                body = await self.client.get_json(url_path("findings", item.key))
            except VendorError as exc:
                if exc.fails_sweep:
                    raise
                if exc.kind in ("not_found", "schema"):  # gone, or an id no path can carry
                    continue
                log.warning("scanorbit_enrich_failed", source=self.name, error=str(exc))
                break
            data = body.get("data") if isinstance(body, dict) else None
            if isinstance(data, dict) and data.get("id") == item.key:
                try:
                    out[i] = self.item(data)
                except ROW_ERRORS:
                    continue  # the listed finding stands, without the detail
        return out


def _account_check(account: _Account) -> Check:
    """An account ScanOrbit can scan is `ok` without a `lastError`; anything else is a blind
    spot: its findings stop changing while the bridge reports "nothing new"."""
    status = (account.status or "").lower()
    number = account.awsAccountId or account.id
    subject = f"{account.name} ({number})" if account.name else number
    ok = status in HEALTHY_ACCOUNT and not account.lastError
    detail = "" if ok else (f"ScanOrbit is not scanning AWS account {subject}: status "
                            f"{account.status or 'unknown'}"
                            + (f", last error: {account.lastError}" if account.lastError else ""))
    return Check("accounts", "account", number, ok, detail)
