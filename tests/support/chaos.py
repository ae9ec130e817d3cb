"""A chaos run: the real `bridge run` process against scripted vendor worlds and real sinks,
killed with SIGKILL again and again while upstream and sinks misbehave, then judged against an
independent ledger (`tests.support.ledger`).

The world is driven in *epochs*: each epoch mutates the simulated vendors (findings appear,
resolve, flap, change severity or title, vanish and come back), may inject upstream faults
(429 storms, 5xx, timeouts, truncated or invalid JSON, error envelopes, drifting pages, empty
or wrongly shaped answers, revoked keys), a sink outage (500s, 429s, a hanging or slow or
stopped receiver) and kills of the daemon at chosen moments (at startup, mid-pagination, right
after the last page when the sweep commits, mid-delivery, or at a random time). A *settled*
epoch then holds the world still until the daemon has completed enough full sweeps to see it;
an unsettled one moves on after a random pause, so some changes are flaps the daemon may
legitimately never see.

Everything random comes from one seed, printed in the report, so a failing run can be replayed.
Waiting is always for a condition with a deadline (sweeps recorded in the state file, an empty
outbox, a receiver that got everything); the only pauses are the scripted world's own pacing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import stat
import string
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from random import Random
from typing import Any

import aiohttp
from aiohttp import web

from bridge.model import item_uid
from bridge.outbox import ACK_WINDOW_BATCHES
from bridge.sim.aether365 import Aether365World
from bridge.sim.aether365 import make_app as make_aether365_app
from bridge.sim.ayliea import SCOPES as AYLIEA_SCOPES
from bridge.sim.ayliea import AylieaWorld
from bridge.sim.ayliea import make_app as make_ayliea_app
from bridge.sim.common import RunningSim, SimWorld
from bridge.sim.faults import Fault
from bridge.sim.scanorbit import ScanOrbitWorld
from bridge.sim.scanorbit import make_app as make_scanorbit_app
from tests.support.daemon import DaemonProcess, run_cli
from tests.support.fake_jira import FakeJira
from tests.support.ledger import Crash, ItemId, Ledger, Received, Truth, Verdict, judge
from tests.support.service_receivers import (
    PagerDutyReceiver,
    ServiceReceiver,
    SlackReceiver,
    TeamsReceiver,
)
from tests.support.waiting import wait_until

SEVERITIES = ("info", "low", "medium", "high", "critical")
# Ayliea priority -> severity: written into the daemon's config and used by the oracle, so the
# oracle does not depend on the source's defaults.
PRIORITY_SEVERITY = {1: "critical", 2: "high", 3: "medium", 4: "low", 5: "info"}
SCANORBIT_INACTIVE = ("resolved", "snoozed", "ignored")
AETHER_TENANT = "tenant-contoso"
# The words Aether365's simulator uses, onto ours (the vendor says "informational").
AETHER_SEVERITY = {"low": "low", "medium": "medium", "high": "high", "informational": "info"}
AETHER_RISK_INACTIVE = ("remediated", "dismissed", "confirmedsafe")
AYLIEA_INACTIVE = ("completed", "dismissed")
# Characters every format must carry through unchanged (no NUL: rsyslog rewrites it).
TITLE_SPICE = ("", "", "", " | pipe", " a=b", " back\\slash", " line\nbreak", ' "quoted"',
               " é中😀", " tab\there", " \x1b[31mesc")
ALNUM = string.ascii_letters + string.digits


@dataclass
class ChaosSettings:
    seed: int = 1
    epochs: int = 24
    crashes: int = 14
    scanorbit_findings: int = 120
    ayliea_recommendations: int = 30
    settle_probability: float = 0.5
    fault_probability: float = 0.6
    outage_probability: float = 0.35
    revoke_probability: float = 0.12
    max_ops: int = 6
    max_outage: float = 3.0
    # One webhook outage this long (503s, or the receiver down) at a random epoch; 0: none.
    long_outage: float = 0.0
    resolve_after_misses: int = 2
    batch_size: int = 10
    syslog: bool = True
    aether365: bool = True
    # Chance, per unsettled epoch, that a threat category's source is not ok (needsConsent,
    # notLicensed, error) or the tenant is disconnected, for a while.
    aether_outage_probability: float = 0.3
    # Share of sink outages that stop rsyslogd (the rest hit the webhook receiver).
    syslog_outage_share: float = 0.3
    syslog_resend_window: float = 2.0
    # Stop starting epochs after this many seconds (the run still finishes and is judged).
    time_budget: float = 150.0
    settle_timeout: float = 90.0
    # Extra environment for the daemon process (the mutant tests inject bugs through it).
    daemon_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Secrets:
    scanorbit: str
    ayliea: str
    webhook: str
    admin: str
    aether365: str

    @classmethod
    def generate(cls, rng: Random) -> Secrets:
        def token(prefix: str) -> str:
            return prefix + "".join(rng.choice(ALNUM) for _ in range(40))

        return cls(token("sk_live_"), token("ayliea_pk_"), token("whsec_"), token("adm_"),
                   token("ae_live_"))

    def values(self) -> dict[str, str]:
        return asdict(self)


# --- the upstream worlds and what is true in them ---------------------------------------------

class ScanOrbitDriver:
    scope, kind = "scanorbit", "finding"

    def __init__(self, world: ScanOrbitWorld, rng: Random) -> None:
        self.world, self.rng = world, rng
        self.graveyard: dict[str, dict[str, Any]] = {}

    def truths(self) -> dict[ItemId, Truth]:
        out: dict[ItemId, Truth] = {}
        for fid, f in self.world.findings.items():
            status = str(f["status"]).lower()
            severity = str(f["severity"]).lower()
            assert severity in SEVERITIES, severity  # the driver only uses canonical words
            title = f.get("summary") or f.get("type") or fid
            out[(self.scope, self.kind, fid)] = Truth(True, status not in SCANORBIT_INACTIVE,
                                                      severity, title, status,
                                                      vendor_severity=str(f["severity"]))
        return out

    def title(self) -> str:
        return f"finding {self.rng.getrandbits(32):08x}{self.rng.choice(TITLE_SPICE)}"

    def mutate(self) -> str:
        w, rng = self.world, self.rng
        live = sorted(i for i, f in w.findings.items() if f["status"] == "open")
        dead = sorted(i for i, f in w.findings.items() if f["status"] != "open")
        op = rng.choices(["add", "resolve", "snooze", "ignore", "reopen", "severity", "retitle",
                          "vanish", "return", "flap"], weights=[4, 3, 1, 1, 2, 3, 2, 2, 2, 2])[0]
        if op == "add" or (not live and op != "return"):
            w.add_finding(severity=rng.choice(SEVERITIES[1:]), summary=self.title())
            return "add"
        fid = rng.choice(live)
        if op in ("resolve", "snooze", "ignore"):
            w.set_status(fid, {"resolve": "resolved", "snooze": "snoozed", "ignore": "ignored"}[op])
        elif op == "reopen" and dead:
            w.reopen(rng.choice(dead))
        elif op == "severity":
            w.set_severity(fid, rng.choice([s for s in SEVERITIES[1:] if s != w.get(fid)["severity"]]))
        elif op == "retitle":
            w.get(fid)["summary"] = self.title()
            w.touch()
        elif op == "vanish":
            self.graveyard[fid] = w.remove(fid)
        elif op == "return" and self.graveyard:
            back = rng.choice(sorted(self.graveyard))
            w.findings[back] = self.graveyard.pop(back)
            w.touch()
        elif op == "flap":  # there and back within one instant: no sweep can see it
            before = w.get(fid)["severity"]
            w.set_status(fid, "resolved")
            w.reopen(fid)
            w.set_severity(fid, "critical" if before != "critical" else "low")
            w.set_severity(fid, before)
        else:
            return "noop"
        return op


class AylieaDriver:
    scope, kind = "ayliea", "recommendation"
    keep = 5  # never empty the list: an empty list is (rightly) no evidence of anything

    def __init__(self, world: AylieaWorld, rng: Random) -> None:
        self.world, self.rng = world, rng
        self.graveyard: dict[str, dict[str, Any]] = {}

    def truths(self) -> dict[ItemId, Truth]:
        out: dict[ItemId, Truth] = {}
        for rid, r in self.world.recommendations.items():
            status = str(r["status"]).lower()
            out[(self.scope, self.kind, rid)] = Truth(
                True, status not in AYLIEA_INACTIVE, PRIORITY_SEVERITY[int(r["priority"])],
                r.get("title") or rid, status, vendor_severity=f"priority {r['priority']}")
        return out

    def title(self) -> str:
        return f"recommendation {self.rng.getrandbits(32):08x}{self.rng.choice(TITLE_SPICE)}"

    def mutate(self) -> str:
        w, rng = self.world, self.rng
        recs = w.recommendations
        live = sorted(i for i, r in recs.items() if r["status"] in ("open", "in_progress"))
        dead = sorted(i for i, r in recs.items() if r["status"] not in ("open", "in_progress"))
        op = rng.choices(["add", "progress", "complete", "dismiss", "reopen", "priority",
                          "retitle", "vanish", "return"], weights=[4, 2, 3, 1, 2, 3, 2, 2, 2])[0]
        if op == "add" or not live:
            w.add_recommendation(priority=rng.randint(1, 5), title=self.title())
            return "add"
        rid = rng.choice(live)
        if op == "progress":
            w.set_status(rid, "in_progress" if recs[rid]["status"] == "open" else "open")
        elif op in ("complete", "dismiss"):
            w.set_status(rid, "completed" if op == "complete" else "dismissed")
        elif op == "reopen" and dead:
            w.set_status(rng.choice(dead), "open")
        elif op == "priority":
            w.update_recommendation(rid, priority=rng.choice(
                [p for p in PRIORITY_SEVERITY if p != recs[rid]["priority"]]))
        elif op == "retitle":
            w.update_recommendation(rid, title=self.title())
        elif op == "vanish" and len(recs) > self.keep:
            self.graveyard[rid] = w.remove_recommendation(rid)
        elif op == "return" and self.graveyard:
            back = rng.choice(sorted(self.graveyard))
            recs[back] = self.graveyard.pop(back)
            w.touch()
        else:
            return "noop"
        return op


class Aether365Driver:
    """One tenant's threat snapshot (risky users, security alerts) and policies."""

    scope = "aether365/contoso"
    keep = 3  # an empty category is (rightly) no evidence that its items are gone

    def __init__(self, world: Aether365World, rng: Random) -> None:
        self.world, self.rng = world, rng
        self.graveyard: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def threats(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self.world.tenant(AETHER_TENANT).threats

    @property
    def policies(self) -> dict[str, dict[str, Any]]:
        return self.world.tenant(AETHER_TENANT).policies

    def truths(self) -> dict[ItemId, Truth]:
        out: dict[ItemId, Truth] = {}
        for uid, u in self.threats["riskyUsers"].items():
            level, state = str(u["riskLevel"]).lower(), str(u["riskState"])
            who = u.get("userPrincipalName") or u.get("displayName") or uid
            out[(self.scope, "risky_user", uid)] = Truth(
                True, level != "none" and state.lower() not in AETHER_RISK_INACTIVE,
                AETHER_SEVERITY.get(level, "info"), f"Risky user {who}", state,
                vendor_severity=str(u["riskLevel"]))
        for aid, a in self.threats["securityAlerts"].items():
            status = str(a["status"])
            out[(self.scope, "security_alert", aid)] = Truth(
                True, status.lower() != "resolved", AETHER_SEVERITY[str(a["severity"]).lower()],
                str(a.get("title") or f"Security alert {aid}"), status,
                vendor_severity=str(a["severity"]))
        for key, p in self.policies.items():
            compliant = bool(p["compliant"])
            out[(self.scope, "policy", key)] = Truth(
                True, not compliant, "medium", p.get("title") or key,
                "compliant" if compliant else "non-compliant")
        return out

    def title(self) -> str:
        return f"alert {self.rng.getrandbits(32):08x}{self.rng.choice(TITLE_SPICE)}"

    def populate(self, users: int, alerts: int, policies: int) -> None:
        w, rng = self.world, self.rng
        for _ in range(users):
            w.add_risky_user(AETHER_TENANT, risk_level=rng.choice(["low", "medium", "high"]),
                             upn=f"user{rng.getrandbits(24):06x}@contoso.example")
        for _ in range(alerts):
            w.add_alert(AETHER_TENANT, title=self.title(),
                        severity=rng.choice(list(AETHER_SEVERITY)))
        w.default_policies(AETHER_TENANT, compliant=2)
        for n in range(policies):
            w.set_policy(AETHER_TENANT, f"chaosPolicy{n}", title=f"policy {n}",
                         current="weak", secure=rng.choice(["weak", "strong"]))

    def mutate(self) -> str:
        w, rng = self.world, self.rng
        users, alerts, policies = (self.threats["riskyUsers"], self.threats["securityAlerts"],
                                   self.policies)
        op = rng.choices(["user_add", "user_level", "user_state", "alert_add", "alert_status",
                          "alert_severity", "alert_retitle", "policy_toggle", "policy_retitle",
                          "vanish", "return"], weights=[2, 2, 2, 2, 3, 2, 1, 3, 1, 2, 2])[0]
        if op == "user_add":
            w.add_risky_user(AETHER_TENANT, risk_level=rng.choice(["low", "medium", "high"]),
                             upn=f"user{rng.getrandbits(24):06x}@contoso.example")
        elif op == "user_level" and users:
            w.update_risky_user(AETHER_TENANT, rng.choice(sorted(users)),
                                riskLevel=rng.choice(["low", "medium", "high", "none"]))
        elif op == "user_state" and users:
            w.update_risky_user(AETHER_TENANT, rng.choice(sorted(users)), riskState=rng.choice(
                ["atRisk", "confirmedCompromised", "remediated", "dismissed"]))
        elif op == "alert_add":
            w.add_alert(AETHER_TENANT, title=self.title(),
                        severity=rng.choice(list(AETHER_SEVERITY)))
        elif op == "alert_status" and alerts:
            w.update_alert(AETHER_TENANT, rng.choice(sorted(alerts)),
                           status=rng.choice(["new", "inProgress", "resolved"]))
        elif op == "alert_severity" and alerts:
            w.update_alert(AETHER_TENANT, rng.choice(sorted(alerts)),
                           severity=rng.choice(list(AETHER_SEVERITY)))
        elif op == "alert_retitle" and alerts:
            w.update_alert(AETHER_TENANT, rng.choice(sorted(alerts)), title=self.title())
        elif op == "policy_toggle" and policies:
            key = rng.choice(sorted(policies))
            w.set_policy(AETHER_TENANT, key, compliant=not policies[key]["compliant"])
        elif op == "policy_retitle" and policies:
            w.set_policy(AETHER_TENANT, rng.choice(sorted(policies)),
                         title=f"policy {rng.getrandbits(24):06x}{rng.choice(TITLE_SPICE)}")
        elif op == "vanish":
            category = rng.choice(["riskyUsers", "securityAlerts", "policies"])
            items = policies if category == "policies" else self.threats[category]
            if len(items) <= self.keep:
                return "noop"
            key = rng.choice(sorted(items))
            self.graveyard[(category, key)] = items.pop(key)
            w.touch()
        elif op == "return" and self.graveyard:
            category, key = rng.choice(sorted(self.graveyard))
            items = policies if category == "policies" else self.threats[category]
            items[key] = self.graveyard.pop((category, key))
            w.touch()
        else:
            return "noop"
        return op


# --- a webhook receiver that can be taken down and brought back on the same port --------------

class HookReceiver:
    """Records events it answered 200 to; `mode` scripts the rest: an HTTP status (500, 429
    with Retry-After...), "hang" (never answers until the mode changes), "slow", or `stop()`
    for a receiver that is down altogether (connection refused)."""

    def __init__(self, sink: str = "hook") -> None:
        self.sink = sink
        self.mode: str | int = "ok"
        self.delay = 0.3
        self.port = 0
        self.received: list[Received] = []
        self.bodies: list[bytes] = []
        self.attempts = 0
        self.header_mismatches = 0
        self.arrived = asyncio.Event()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def running(self) -> bool:
        return self._runner is not None

    def set_mode(self, mode: str | int) -> None:
        self.mode = mode
        if mode != "hang":
            self._release.set()
            self._release = asyncio.Event()

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self._release.set()
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.attempts += 1
        self.arrived.set()
        mode = self.mode
        if mode == "hang":
            await self._release.wait()
            return web.json_response({"error": "was hanging"}, status=503)
        if mode == "slow":
            await asyncio.sleep(self.delay)
        elif mode != "ok":
            status = int(mode)
            headers = {"Retry-After": "1"} if status == 429 else {}
            # Careless receivers quote the caller's credentials in their errors.
            return web.json_response({"error": "scripted outage", "authorization":
                                      request.headers.get("Authorization", "")},
                                     status=status, headers=headers)
        if request.transport is None or request.transport.is_closing():
            return web.json_response({"error": "caller left"}, status=503)  # never seen by it
        body = json.loads(raw)
        if request.headers.get("webhook-id") != body.get("id"):
            self.header_mismatches += 1
        self.received.append(Received.of(self.sink, body, time.time()))
        self.bodies.append(raw)
        return web.json_response({"ok": True})


class PresetTargets:
    """Slack, Teams and PagerDuty sinks against receivers that follow each service's documented
    contract strictly (tests/support/service_receivers.py). They share the webhook receiver's
    outages (500, 503, 429 or down), and are judged against what the file sink received: every
    event arrives (at least once), each item's events in order, in the shape the service
    documents; PagerDuty's alert per item ends triggered or resolved as the item does."""

    def __init__(self, rng: Random) -> None:
        def token(n: int) -> str:
            return "".join(rng.choice(ALNUM) for _ in range(n))

        self.slack = SlackReceiver(path=f"/services/T{token(8)}/B{token(8)}/{token(24)}")
        self.teams = TeamsReceiver(path=f"/workflows/{token(12)}/triggers/manual/paths/invoke")
        self.pagerduty = PagerDutyReceiver(routing_key=token(32))
        self.receivers: dict[str, ServiceReceiver] = {
            "chat": self.slack, "teams": self.teams, "oncall": self.pagerduty}
        # Jira: one ticket per item, judged on the tickets it holds at the end.
        self.jira = FakeJira(mode="cloud", token=token(24), search_lag=0.2)
        self.jira_port = 0

    def secrets(self) -> dict[str, str]:
        return {"slack webhook path": self.slack.path, "teams workflow path": self.teams.path,
                "pagerduty routing key": self.pagerduty.routing_key,
                "jira api token": self.jira.token}

    async def start(self) -> None:
        for receiver in self.receivers.values():
            if receiver.runner is None:
                await receiver.start(receiver.port)
        if self.jira.runner is None:
            await self.jira.start(self.jira_port)
            self.jira_port = self.jira.port

    async def stop(self) -> None:
        for receiver in self.receivers.values():
            await receiver.stop()
        await self.jira.stop()

    def set_outage(self, status: int | None) -> None:
        for receiver in self.receivers.values():
            receiver.outage = status
        self.jira.outage = status

    def sinks(self, delivery: dict[str, Any]) -> list[dict[str, Any]]:
        common = {**delivery, "concurrency": 4, "timeout": 3, "max_events_per_minute": None}
        base = "http://127.0.0.1"
        return [
            {"name": "chat", "type": "slack",
             "webhook_url": f"{base}:{self.slack.port}{self.slack.path}", **common},
            {"name": "teams", "type": "teams",
             "webhook_url": f"{base}:{self.teams.port}{self.teams.path}", **common},
            {"name": "oncall", "type": "pagerduty", "routing_key": self.pagerduty.routing_key,
             "url": f"{base}:{self.pagerduty.port}{self.pagerduty.path}", **common},
            {"name": "tickets", "type": "jira", "url": f"{base}:{self.jira_port}",
             "email": self.jira.email, "api_token": self.jira.token,
             "project": self.jira.project, "search_horizon": 1.0, "probe_interval": 0.5,
             **{k: v for k, v in common.items() if k != "max_events_per_minute"}},
        ]

    def judge(self, truth: list[Received]) -> list[str]:
        """Problems, judged against the file sink's events (which the ledger judges)."""
        problems: list[str] = []
        events = {r.id: r for r in truth}
        for name, receiver in self.receivers.items():
            problems += [f"{name}: the receiver refused a payload: {v}"
                         for v in receiver.violations[:5]]
        for name, receiver in (("chat", self.slack), ("teams", self.teams)):
            problems += _arrived_in_order(name, receiver.arrived(), events)
        triggers = [events[i] for i in self.pagerduty.arrived() if i in events]
        wanted = [r for r in truth if r.type != "resolved"]
        problems += _arrived_in_order("oncall", [r.id for r in triggers],
                                      {r.id: r for r in wanted})
        last: dict[str, Received] = {}
        for r in sorted(truth, key=lambda r: r.counter):
            last[item_uid(r.scope, r.kind, r.key)] = r
        wrong = [uid for uid, r in last.items() if self.pagerduty.alerts.get(uid) != (
            "resolved" if r.type == "resolved" else "triggered")]
        if wrong:
            problems.append(f"oncall: {len(wrong)} PagerDuty alert(s) do not end as their "
                            f"item did, e.g. {wrong[:3]}")
        return problems


def judge_jira(jira: FakeJira, truth: list[Received]) -> list[str]:
    """Per item the file sink heard of, exactly one ticket (by its dedupe label), and its
    final status what the item's last event says: done when resolved, open otherwise; no
    request Jira would have refused."""
    problems = [f"tickets: Jira would have refused: {v}" for v in jira.violations[:5]]
    last: dict[str, Received] = {}
    for r in sorted(truth, key=lambda r: r.counter):
        last[item_uid(r.scope, r.kind, r.key)] = r
    tickets: dict[str, list[Any]] = {}
    for ticket in jira.tickets():
        for label in ticket.labels:
            if label.startswith("bridge-"):
                tickets.setdefault(label.removeprefix("bridge-"), []).append(ticket)
    duplicated = [uid for uid, found in tickets.items() if len(found) > 1]
    missing = [uid for uid in last if uid not in tickets]
    unknown = [uid for uid in tickets if uid not in last]
    wrong = [uid for uid, r in last.items() if uid in tickets and len(tickets[uid]) == 1
             and (tickets[uid][0].category == "done") != (r.type == "resolved")]
    for what, uids in (("item(s) have more than one ticket", duplicated),
                       ("item(s) have no ticket", missing),
                       ("ticket(s) belong to no item the file sink got", unknown),
                       ("ticket(s) end in a status their item's last event contradicts",
                        wrong)):
        if uids:
            problems.append(f"tickets: {len(uids)} {what}, e.g. {sorted(uids)[:3]}")
    return problems


def _arrived_in_order(sink: str, arrived: list[str], events: dict[str, Received]) -> list[str]:
    """Every event of `events` arrived; first arrivals of one item in counter order."""
    problems: list[str] = []
    missing = set(events) - set(arrived)
    if missing:
        problems.append(f"{sink}: {len(missing)} event(s) never arrived, e.g. {sorted(missing)[:3]}")
    unknown = set(arrived) - set(events)
    if unknown:
        problems.append(f"{sink}: {len(unknown)} event(s) arrived that the file sink never got")
    seen: dict[ItemId, int] = {}
    disorder = 0
    for event_id in dict.fromkeys(arrived):  # first arrivals, in order
        r = events.get(event_id)
        if r is None:
            continue
        if r.counter < seen.get(r.item, 0):
            disorder += 1
        seen[r.item] = max(seen.get(r.item, 0), r.counter)
    if disorder:
        problems.append(f"{sink}: {disorder} event(s) arrived before an earlier one of their item")
    return problems


class SyslogTail:
    """What rsyslogd wrote, read as it arrives and stamped with when it was first seen (rsyslog's
    output carries no receive time, and resend-window duplicates are judged by time)."""

    def __init__(self, rsyslog: Any, sink: str = "siem") -> None:
        self.rsyslog, self.sink = rsyslog, sink
        self.offset = 0
        self.received: list[Received] = []

    def poll(self) -> None:
        path = self.rsyslog.output("tcp")
        if not path.exists():
            return
        with path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        now = time.time()
        for line in data[:end].splitlines():
            parts = json.loads(line)["raw"].split(" ", 7)
            if len(parts) == 8 and parts[7].startswith("{"):  # not rsyslogd's startup probe
                self.received.append(Received.of(self.sink, json.loads(parts[7]), now))

    async def follow(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(0.1)


@web.middleware
async def echo_credentials(request: web.Request, handler: Any) -> web.StreamResponse:
    """Vendor errors that quote the key the caller sent, as some real APIs do: every error
    path of a source then carries a secret for the daemon to keep out of logs and state."""
    response: web.StreamResponse = await handler(request)
    if response.status >= 400 and isinstance(response, web.Response) \
            and isinstance(response.body, bytes):
        with contextlib.suppress(ValueError):
            body = json.loads(response.body)
            key = request.headers.get("X-API-Key") or request.headers.get("Authorization", "")
            if isinstance(body, dict):
                for field_name in ("message", "error"):
                    if isinstance(body.get(field_name), str):
                        body[field_name] += f" (sent: {key})"
                response.body = json.dumps(body).encode()
    return response


# --- the state file, read-only, from outside ---------------------------------------------------

class StateView:
    """Read-only queries on the daemon's SQLite file (a WAL reader never blocks the writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    def complete_sweeps_since(self, scope: str, since: float) -> int:
        rows = self.query("SELECT started_at FROM sweeps WHERE scope = ? AND outcome = 'complete' "
                          "ORDER BY id DESC LIMIT 50", (scope,))
        return sum(1 for (started,) in rows if datetime.fromisoformat(started).timestamp() > since)

    def pending(self, sink: str, limit: int) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT event_id FROM outbox WHERE sink = ? ORDER BY seq LIMIT ?", (sink, limit))]

    def depth(self) -> dict[str, int]:
        return {sink: int(n) for sink, n in
                self.query("SELECT sink, COUNT(*) FROM outbox GROUP BY sink")}

    def dead_letters(self) -> int:
        rows = self.query("SELECT COUNT(*) FROM dead_letters")
        return int(rows[0][0]) if rows else 0

    def counters(self) -> dict[ItemId, int]:
        return {(s, k, key): c for s, k, key, c in
                self.query("SELECT scope, kind, key, counter FROM items")}

    def sweep_ends(self) -> dict[tuple[str, float], float]:
        return {(scope, datetime.fromisoformat(a).timestamp()): datetime.fromisoformat(b).timestamp()
                for scope, a, b in self.query("SELECT scope, started_at, finished_at FROM sweeps")}

    def outcomes(self) -> Counter[str]:
        return Counter({str(outcome): int(n) for outcome, n in
                        self.query("SELECT outcome, COUNT(*) FROM sweeps GROUP BY outcome")})


# --- the run -----------------------------------------------------------------------------------

@dataclass
class ChaosReport:
    seed: int
    settings: dict[str, Any]
    epochs: int = 0
    settled_epochs: int = 0
    crashes: int = 0
    crash_modes: Counter[str] = field(default_factory=Counter)
    # Targeted kills whose target was reached (the sweep was mid-pagination, the last page had
    # been served, a delivery had arrived); the others fell back to a kill at the deadline.
    crashes_on_target: Counter[str] = field(default_factory=Counter)
    faults_fired: Counter[str] = field(default_factory=Counter)
    outages: Counter[str] = field(default_factory=Counter)
    revocations: int = 0
    dead_letters_replayed: int = 0
    # Deliveries in flight (per sink) at the crashes and rsyslogd restarts: what duplicates
    # may amount to at most.
    inflight_at_crashes: int = 0
    world_changes: int = 0
    sweeps: Counter[str] = field(default_factory=Counter)
    verdict: Verdict = field(default_factory=Verdict)
    secret_leaks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    jira_tickets: int = 0  # judged one per item by `judge_jira`
    jira_searches: int = 0  # label searches: create intents settled after crashes or outages

    @property
    def ok(self) -> bool:
        return self.verdict.ok and not self.secret_leaks and not self.problems

    def figures(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "seed": self.seed, "epochs": self.epochs, "settled_epochs": self.settled_epochs,
            "crashes_injected": self.crashes, "crash_modes": dict(self.crash_modes),
            "crashes_on_target": dict(self.crashes_on_target),
            "upstream_faults_fired": sum(self.faults_fired.values()),
            "faults_by_kind": dict(self.faults_fired), "sink_outages": dict(self.outages),
            "key_revocations": self.revocations, "world_changes": self.world_changes,
            "dead_letters_replayed": self.dead_letters_replayed,
            "sweeps": dict(self.sweeps), "items": v.items, "events_checked": v.events,
            "deliveries_checked": v.deliveries, "settle_points": v.settles_checked,
            "lost": v.lost, "duplicated": v.duplicated,
            "inflight_at_crashes": self.inflight_at_crashes,
            "unexplained_duplicates": v.unexplained_duplicates,
            "false_resolved": v.false_resolved, "wrong_final_state": v.wrong_final,
            "skipped_settled_states": v.skipped_states, "phantom_states": v.phantom_states,
            "id_mismatches": v.id_mismatches,
            "secret_leaks": len(self.secret_leaks), "seconds": round(self.seconds, 1),
            "jira_tickets": self.jira_tickets, "jira_searches": self.jira_searches,
        }

    def summary(self) -> str:
        f = self.figures()
        lines = [f"chaos seed={f['seed']}: {f['epochs']} epochs ({f['settled_epochs']} settled), "
                 f"{f['crashes_injected']} crashes {f['crash_modes']} (on target: "
                 f"{f['crashes_on_target']}), "
                 f"{f['upstream_faults_fired']} upstream faults, outages {f['sink_outages']}, "
                 f"{f['key_revocations']} key revocations, {f['world_changes']} world changes, "
                 f"{f['dead_letters_replayed']} dead letters replayed, "
                 f"sweeps {f['sweeps']}",
                 f"  events checked {f['events_checked']} ({f['deliveries_checked']} deliveries, "
                 f"{f['items']} items, {f['settle_points']} settle points): lost {f['lost']}, "
                 f"duplicated {f['duplicated']} (unexplained {f['unexplained_duplicates']}; "
                 f"{f['inflight_at_crashes']} in flight at crashes), "
                 f"false resolved {f['false_resolved']}, wrong final state "
                 f"{f['wrong_final_state']}, skipped states {f['skipped_settled_states']}, "
                 f"phantom states {f['phantom_states']}, "
                 f"secret leaks {f['secret_leaks']} [{f['seconds']} s]",
                 f"  jira: {f['jira_tickets']} tickets, {f['jira_searches']} label searches"]
        lines += [f"  problem: {p}" for p in [*self.problems, *self.secret_leaks,
                                              *self.verdict.problems][:40]]
        return "\n".join(lines)


class ChaosRun:
    def __init__(self, settings: ChaosSettings, workdir: Path) -> None:
        self.s = settings
        self.workdir = workdir
        self.rng = Random(settings.seed)
        self.secrets = Secrets.generate(Random(settings.seed * 7919 + 1))
        self.ledger = Ledger()
        self.report = ChaosReport(settings.seed, asdict(settings))
        self.state_path = workdir / "state" / "bridge.db"
        self.view = StateView(self.state_path)
        self.events_file = workdir / "events.jsonl"
        self.hook = HookReceiver()
        self.presets = PresetTargets(Random(settings.seed * 104729 + 3))
        self.crashes: list[Crash] = []
        self.daemon: DaemonProcess | None = None
        self.expected_exit = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.kills: asyncio.Queue[str] = asyncio.Queue()
        self.outage_running = False
        self.revoked: set[str] = set()
        self.cli_outputs: list[str] = []
        self.metrics_text = ""
        self.rsyslog: Any = None
        self.tail: SyslogTail | None = None
        self.follower: asyncio.Future[None] | None = None
        self.so_world = ScanOrbitWorld(api_keys={self.secrets.scanorbit}, seed=settings.seed,
                                       rate_limit=100_000)
        self.ay_world = AylieaWorld(keys={self.secrets.ayliea: AYLIEA_SCOPES},
                                    seed=settings.seed + 1, rate_limit=100_000)
        self.ae_world = Aether365World(tokens={self.secrets.aether365: AETHER_TENANT},
                                       seed=settings.seed + 4, rate_limit=100_000)
        self.scanorbit = ScanOrbitDriver(self.so_world, Random(settings.seed + 2))
        self.ayliea = AylieaDriver(self.ay_world, Random(settings.seed + 3))
        self.aether = Aether365Driver(self.ae_world, Random(settings.seed + 5))
        self.drivers: list[ScanOrbitDriver | AylieaDriver | Aether365Driver] = [
            self.scanorbit, self.ayliea, *([self.aether] if settings.aether365 else [])]
        self.worlds: list[SimWorld] = [self.so_world, self.ay_world,
                                       *([self.ae_world] if settings.aether365 else [])]
        self.aether_outage: str | None = None
        self.long_outage_epoch = -1
        self.fault_log: list[tuple[float, str, str, str, int | None]] = []
        self.sims: list[RunningSim] = []

    # -- setup

    def config(self, urls: list[str]) -> dict[str, Any]:
        s = self.s
        http = {"rate_limit_per_minute": 60_000, "timeout": 1.0, "max_retries": 2,
                "backoff_initial": 0.05, "backoff_max": 0.2, "max_retry_after": 2}
        delivery = {"batch_size": s.batch_size, "max_attempts": 100_000, "backoff_initial": 0.05,
                    "backoff_max": 0.5}
        sinks: list[dict[str, Any]] = [
            {"name": "file", "type": "file", "path": str(self.events_file), **delivery},
            {"name": "hook", "type": "webhook", "url": self.hook.url,
             "bearer_token": self.secrets.webhook, "concurrency": 4, "timeout": 3, **delivery},
        ]
        sinks += self.presets.sinks(delivery)
        if self.rsyslog is not None:
            sinks.append({"name": "siem", "type": "syslog", "host": "127.0.0.1",
                          "port": self.rsyslog.ports["tcp"], "protocol": "tcp", "format": "json",
                          "rfc": 5424, "connect_timeout": 2, "write_timeout": 5,
                          "resend_window_seconds": s.syslog_resend_window, **delivery})
        so_url, ay_url = urls[0], urls[1]
        sources: list[dict[str, Any]] = [
            {"name": "scanorbit", "type": "scanorbit", "base_url": so_url,
             "api_key": self.secrets.scanorbit, "interval": 1, "jitter": 0,
             "full_resweep_interval": 0, "page_size": 25,
             "resolve_after_misses": s.resolve_after_misses, "http": http},
            {"name": "ayliea", "type": "ayliea", "base_url": ay_url,
             "api_key": self.secrets.ayliea, "interval": 1, "jitter": 0,
             "full_resweep_interval": 0, "scores": False, "discovery": False,
             "page_size": 10, "page_overlap": 1,
             "priority_severity": {str(k): v for k, v in PRIORITY_SEVERITY.items()},
             "resolve_after_misses": s.resolve_after_misses, "http": http},
        ]
        if s.aether365:
            sources.append({"name": "aether365", "type": "aether365", "base_url": urls[2],
                            "tenants": [{"name": "contoso", "api_key": self.secrets.aether365}],
                            "compliance": False, "threats": True, "policies": True,
                            "policy_severity": "medium", "interval": 1, "jitter": 0,
                            "resolve_after_misses": s.resolve_after_misses, "http": http})
        return {
            "state": {"path": str(self.state_path)},
            "log": {"format": "json", "level": "info"},
            "admin": {"port": 0, "token": self.secrets.admin},
            "sources": sources,
            "sinks": sinks,
            # Every event to every sink, the first sweep included (the chat and paging
            # presets would otherwise get a scope's baseline as one summary).
            "routes": {"sinks": [k["name"] for k in sinks], "baseline": "deliver"},
        }

    @property
    def sinks(self) -> list[str]:
        return ["file", "hook"] + (["siem"] if self.rsyslog is not None else [])

    async def setup(self, rsyslogd: str | None) -> None:
        for _ in range(self.s.scanorbit_findings):
            self.so_world.add_finding(severity=self.scanorbit.rng.choice(SEVERITIES[1:]),
                                      summary=self.scanorbit.title())
        for _ in range(self.s.ayliea_recommendations):
            self.ay_world.add_recommendation(priority=self.ayliea.rng.randint(1, 5),
                                             title=self.ayliea.title())
        self.aether.populate(users=8, alerts=8, policies=6)
        for world in self.worlds:
            self._watch_drift(world)
            self._watch_faults(world)
        self.sync()
        apps = [make_scanorbit_app(self.so_world), make_ayliea_app(self.ay_world),
                *([make_aether365_app(self.ae_world)] if self.s.aether365 else [])]
        for app in apps:
            app.middlewares.insert(0, echo_credentials)  # outermost: sees every error answer
        self.sims = [await RunningSim(app, shutdown_timeout=0.2).start() for app in apps]
        await self.hook.start()
        await self.presets.start()
        if rsyslogd is not None:
            from tests.support.rsyslogd import Rsyslogd

            self.rsyslog = Rsyslogd(rsyslogd, self.workdir / "rsyslog")
            await asyncio.to_thread(self.rsyslog.start)
            self.tail = SyslogTail(self.rsyslog)
            self.follower = asyncio.ensure_future(self.tail.follow())
        self.daemon_config = self.config([sim.url for sim in self.sims])
        await self.start_daemon()

    def _watch_faults(self, world: SimWorld) -> None:
        """Keep when each fault fired (for diagnosing a failed run: see `fault_log`)."""
        plan = world.faults
        original = plan.match

        def match(path: str, page: int | None) -> Fault | None:
            fault = original(path, page)
            if fault is not None:
                self.fault_log.append((time.time(), world.vendor, fault.kind, path, page))
            return fault

        plan.match = match  # type: ignore[method-assign]

    def _watch_drift(self, world: SimWorld) -> None:
        """A drift fault inserts items in the middle of a sweep: record them that instant."""
        original = world.drift

        def drift(request: web.Request, count: int) -> None:
            original(request, count)
            self.sync()

        world.drift = drift  # type: ignore[method-assign]

    def sync(self) -> None:
        now = time.time()
        for d in self.drivers:
            self.ledger.record(now, d.truths(), [d.scope])

    async def start_daemon(self) -> None:
        daemon = DaemonProcess(self.daemon_config, self.workdir, env=self.s.daemon_env,
                               grace=5.0)
        self.daemon_mark = daemon.mark()
        self.daemon = await daemon.start()

    def daemon_trouble(self) -> str | None:
        d = self.daemon
        if d is not None and d.proc is not None and d.proc.returncode is not None \
                and not self.expected_exit:
            return f"daemon exited with {d.proc.returncode}:\n{d.logs()[-6000:]}"
        return None

    # -- faults

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def crasher(self) -> None:
        """Kills the daemon, one order at a time, and brings it back."""
        while True:
            mode = await self.kills.get()
            try:
                await self.crash(mode)
            finally:
                self.kills.task_done()

    async def crash(self, mode: str) -> None:
        rng = self.rng
        assert self.daemon is not None
        if mode == "startup":
            await asyncio.sleep(rng.uniform(0.0, 0.8))
        elif mode == "random":
            await asyncio.sleep(rng.uniform(0.0, 2.0))
        elif mode in ("pagination", "commit"):
            pages = max(1, math.ceil(len(self.so_world.findings) / 25))
            if mode == "pagination":  # stall a middle page: the sweep is mid-walk when killed
                marker = Fault("timeout", path="/findings$", page=rng.randint(min(2, pages), pages),
                               delay=3.0)
            else:  # the last page was just served: the sweep diffs and commits now
                marker = Fault("timeout", path="/findings$", page=pages, delay=0.0)
            self.so_world.faults.add(marker)
            with contextlib.suppress(TimeoutError):
                await wait_until(lambda: marker.hits > 0, 6.0, f"sweep reached page {marker.page}",
                               every=0.002)
                self.report.crashes_on_target[mode] += 1
            marker.hits = marker.times  # spent, whether it fired or not
            await asyncio.sleep(rng.uniform(0.0, 0.4) if mode == "pagination"
                                else rng.uniform(0.0, 0.03))
        elif mode == "delivery":
            self.hook.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await wait_until(lambda: self.hook.arrived.is_set(), 4.0, "a delivery", every=0.002)
                self.report.crashes_on_target[mode] += 1
            await asyncio.sleep(rng.uniform(0.0, 0.02))
        self.expected_exit = True
        await self.daemon.kill()
        # In flight: the batch being sent and the rows delivered but not yet acknowledged,
        # fewer than the acknowledgement window plus a batch (bridge/outbox.py `_acknowledge`).
        inflight = (ACK_WINDOW_BATCHES + 2) * self.s.batch_size
        crash = Crash(time.time(), mode, {
            sink: set(self.view.pending(sink, inflight)) for sink in self.sinks})
        self.crashes.append(crash)
        self.report.crashes += 1
        self.report.crash_modes[mode] += 1
        # Until the new process replaces it, `self.daemon` is the one just killed: its exit
        # stays expected, or a watcher polling meanwhile would report the kill as a failure.
        await self.start_daemon()
        self.expected_exit = False

    def upstream_faults(self) -> None:
        rng = self.rng
        for _ in range(rng.randint(1, 3)):
            targets: list[tuple[SimWorld, str]] = [
                (self.so_world, "/findings$"), (self.so_world, "/findings$"),
                (self.ay_world, "/recommendations$"), (self.so_world, "/scans/recent$")]
            if self.s.aether365:
                targets += [(self.ae_world, "/tenants/me/threats$"),
                            (self.ae_world, "/tenants/me/policies$")]
            world, path = rng.choice(targets)
            kind = rng.choice(["status", "status", "timeout", "truncate", "invalid_json", "reset",
                               "envelope_error", "drift", "empty", "schema", "storm"])
            page = rng.choice([None, 1, 2, 3])
            times = rng.randint(1, 3)
            if kind == "storm":  # a 429 storm: every request for a while, with Retry-After
                world.faults.add(Fault("status", path=path, status=429, code="RATE_LIMITED",
                                       retry_after=rng.choice([None, "1"]), times=rng.randint(3, 8)))
            elif kind == "status":
                world.faults.add(Fault("status", path=path, page=page, times=times,
                                       status=rng.choice([429, 500, 502, 503])))
            elif kind == "timeout":
                world.faults.add(Fault("timeout", path=path, page=page, times=times, delay=1.5))
            elif kind == "reset":
                world.faults.add(Fault("reset", path=path, page=page, times=2 * times))
            elif kind == "drift":
                world.faults.add(Fault("drift", path=path, page=page, drift=rng.randint(1, 3)))
            elif kind == "schema":
                world.faults.add(Fault("schema", path=path, page=page, times=times,
                                       variant=rng.choice(["object", "missing_id"])))
            else:
                world.faults.add(Fault(kind, path=path, page=page, times=times))  # type: ignore[arg-type]

    def quiet_faults(self) -> None:
        """Before a settle point, spend the faults that would make it unsound: a drift changes
        the world; an emptied snapshot (Aether365 threats) leaves its kinds out of a sweep that
        is still recorded complete (an empty list is rightly no evidence of absence), so the
        sweeps counted for the settle would not all have looked at every kind."""
        for world in self.worlds:
            for fault in world.faults.pending:
                if fault.kind in ("drift", "empty"):
                    fault.hits = fault.times

    async def revoke(self, which: str, seconds: float) -> None:
        self.revoked.add(which)
        self.report.revocations += 1
        if which == "scanorbit":
            self.so_world.revoke(self.secrets.scanorbit)
        elif which == "aether365":
            self.ae_world.revoke(self.secrets.aether365)
        else:
            self.ay_world.revoke(self.secrets.ayliea)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.restore_key(which)

    def restore_key(self, which: str) -> None:
        if which == "scanorbit":
            self.so_world.restore(self.secrets.scanorbit)
        elif which == "aether365":
            self.ae_world.tokens[self.secrets.aether365] = AETHER_TENANT
        else:
            self.ay_world.add_key(self.secrets.ayliea, AYLIEA_SCOPES)
        self.revoked.discard(which)

    def aether_trouble(self) -> None:
        """A threat category whose source is not ok, or consent withdrawn for the tenant: what
        the daemon sees of Aether365 is partial until `aether_fixed`. Applied at once, so it
        never starts after a settle point began."""
        rng = self.rng
        if rng.random() < 0.25:
            self.ae_world.disconnect(AETHER_TENANT)
            self.aether_outage = "ae-disconnected"
        else:
            category = rng.choice(["riskyUsers", "securityAlerts"])
            state = rng.choice(["needsConsent", "notLicensed", "error"])
            self.ae_world.set_source(AETHER_TENANT, category, state)
            self.aether_outage = f"ae-{state}"
        self.report.outages[self.aether_outage] += 1

    def aether_fixed(self) -> None:
        if self.aether_outage is None:
            return
        self.ae_world.reconnect(AETHER_TENANT)
        for category in ("riskyUsers", "riskDetections", "securityAlerts"):
            self.ae_world.set_source(AETHER_TENANT, category, "ok")
        self.aether_outage = None

    async def aether_fixed_after(self, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        finally:
            self.aether_fixed()

    async def outage(self, mode: str | int, seconds: float, label: str | None = None) -> None:
        self.outage_running = True
        self.report.outages[label or str(mode)] += 1
        try:
            if mode == "down":
                await self.hook.stop()
                await self.presets.stop()
            else:
                self.hook.set_mode(mode)
                # Failures and throttling only: an event a preset refuses (422) is replayed from
                # the dead letters at the end, after its item's later events by nature, which
                # the presets' judge (every item in order) would rightly call disorder.
                self.presets.set_outage(mode if mode in (500, 503, 429) else None)
            await asyncio.sleep(seconds)
        finally:
            self.hook.set_mode("ok")
            self.presets.set_outage(None)
            await self.hook.start()
            await self.presets.start()
            self.outage_running = False

    async def syslog_outage(self, seconds: float) -> None:
        """rsyslogd stops (draining what it received) and comes back on the same port. The
        syslog sink then writes its resend window again (bytes that may have died unread in the
        dead receiver's socket buffer): duplicates by design, of what arrived just before."""
        assert self.tail is not None
        self.outage_running = True
        self.report.outages["syslog-down"] += 1
        stopped = time.time()
        try:
            await asyncio.to_thread(self.rsyslog.stop)
            stopped = time.time()
            self.tail.poll()
            await asyncio.sleep(seconds)
        finally:
            await asyncio.to_thread(self.rsyslog.start)
            self.tail.poll()
            before = [r.at or 0.0 for r in self.tail.received if (r.at or 0.0) <= stopped + 0.5]
            newest = max(before, default=stopped)
            window = {r.id for r in self.tail.received
                      if newest - self.s.syslog_resend_window - 1.0 <= (r.at or 0.0)}
            self.crashes.append(Crash(stopped, "syslog-restart", {"siem": window}))
            self.outage_running = False

    # -- epochs

    async def wait_swept(self, since: float, times: int) -> None:
        scopes = [d.scope for d in self.drivers]
        await wait_until(lambda: all(self.view.complete_sweeps_since(s, since) >= times
                                   for s in scopes),
                       self.s.settle_timeout, f"{times} complete sweeps of {scopes} after {since}",
                       every=0.05, alive=self.daemon_trouble)

    async def epoch(self, n: int, crashes: int) -> None:
        rng = self.rng
        settled = rng.random() < self.s.settle_probability
        for d in self.drivers:
            for _ in range(rng.randint(0, self.s.max_ops)):
                d.mutate()
        self.so_world.complete_scan()
        self.sync()
        if rng.random() < self.s.fault_probability:
            self.upstream_faults()
        if not self.revoked and rng.random() < self.s.revoke_probability:
            which = rng.choice(["scanorbit", "ayliea", *(["aether365"] if self.s.aether365 else [])])
            self.spawn(self.revoke(which, rng.uniform(0.5, 2.5)))
        if self.s.aether365 and not settled and self.aether_outage is None \
                and rng.random() < self.s.aether_outage_probability:
            self.aether_trouble()
            self.spawn(self.aether_fixed_after(rng.uniform(0.5, 3.0)))
        if n == self.long_outage_epoch and self.outage_running:
            self.long_outage_epoch += 1  # after the outage in progress
        elif n == self.long_outage_epoch:
            long_modes: list[str | int] = [503, "down"]
            mode = rng.choice(long_modes)
            self.spawn(self.outage(mode, self.s.long_outage, f"long-{mode}"))
        elif not self.outage_running and rng.random() < self.s.outage_probability:
            seconds = rng.uniform(0.5, self.s.max_outage)
            if self.rsyslog is not None and rng.random() < self.s.syslog_outage_share:
                self.spawn(self.syslog_outage(seconds))
            else:
                # 422: the receiver rejects the content, so events are dead-lettered (and
                # replayed with `bridge dlq replay` at the end: they must still arrive).
                modes: list[str | int] = [500, 503, 429, "hang", "slow", "down", "down", 422]
                self.spawn(self.outage(rng.choice(modes), seconds))
        for _ in range(crashes):
            self.kills.put_nowait(rng.choice(["random", "random", "pagination", "commit",
                                              "delivery", "startup"]))
        self.report.epochs += 1
        if settled:
            # Everything the daemon needs to see the whole world again, before the settle
            # point: a consent-less category is left alone by design, so it cannot settle.
            self.quiet_faults()
            self.aether_fixed()
            self.sync()
            at = time.time()
            settle = self.ledger.settle(at)
            await self.wait_swept(at, self.s.resolve_after_misses)
            if self.ledger.last_change > at:  # a late drift moved the world after all
                self.ledger.discard_settle(settle)
            else:
                self.report.settled_epochs += 1
        else:
            await asyncio.sleep(rng.uniform(0.1, 1.2))

    async def run(self, rsyslogd: str | None = None) -> ChaosReport:
        started = time.monotonic()
        crasher = asyncio.ensure_future(self.crasher())
        try:
            await self.setup(rsyslogd)
            plan = Counter(self.rng.choice(range(self.s.epochs)) for _ in range(self.s.crashes))
            self.long_outage_epoch = self.rng.randrange(self.s.epochs) if self.s.long_outage else -1
            for n in range(self.s.epochs):
                if time.monotonic() - started > self.s.time_budget:
                    self.report.problems.append(
                        f"time budget of {self.s.time_budget:g}s spent after {n} epochs")
                    break
                await self.epoch(n, plan[n])
            await self.finish()
        finally:
            background = [crasher, *self.tasks, *([self.follower] if self.follower else [])]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.teardown()
            self.report.seconds = time.monotonic() - started
        return self.report

    # -- the end: everything recovers, everything is delivered, then judge

    async def finish(self) -> None:
        await asyncio.wait_for(self.kills.join(), 60)
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for world in self.worlds:
            self.report.faults_fired.update(world.faults.fired_kinds())
            world.faults.clear()
        self.aether_fixed()
        for which in list(self.revoked):
            self.restore_key(which)
        self.hook.set_mode("ok")
        await self.hook.start()
        self.presets.set_outage(None)
        await self.presets.start()
        self.sync()
        at = time.time()
        settle = self.ledger.settle(at)
        await self.wait_swept(at, self.s.resolve_after_misses + 1)
        if self.ledger.last_change > at:
            self.ledger.discard_settle(settle)
        await wait_until(lambda: not any(self.view.depth().values()), 120.0,
                       "every sink's outbox emptied", every=0.05, alive=self.daemon_trouble)
        await self.replay_dead_letters()
        received = self.collect()
        if self.tail is not None:  # rsyslog writes its file a moment after it received
            tail = self.tail
            wanted = {r.id for r in received["hook"]} | {r.id for r in received["file"]}

            def caught_up() -> bool:
                tail.poll()
                return wanted <= {r.id for r in tail.received}

            with contextlib.suppress(TimeoutError):
                await wait_until(caught_up, 30.0, "rsyslog wrote every event", every=0.05)
            received["siem"] = list(tail.received)
        await self.security_while_running()
        assert self.daemon is not None
        self.expected_exit = True
        code = await self.daemon.stop(30)
        if code != 0:
            self.report.problems.append(f"SIGTERM exit code {code}")
        self.report.sweeps = self.view.outcomes()
        if (dead := self.view.dead_letters()) != 0:
            self.report.problems.append(f"{dead} dead letters left after the replay")
        if self.hook.header_mismatches:
            self.report.problems.append(f"{self.hook.header_mismatches} webhook-id headers "
                                        "differ from the body's id")
        self.report.world_changes = self.ledger.changes
        self.report.inflight_at_crashes = sum(len(ids) for c in self.crashes
                                              for ids in c.inflight.values())
        self.report.verdict = judge(self.ledger, received, self.view.counters(), self.crashes,
                                    self.view.sweep_ends())
        self.report.problems += self.presets.judge(received["file"])
        self.report.problems += judge_jira(self.presets.jira, received["file"])
        self.report.jira_tickets = len(self.presets.jira.tickets())
        self.report.jira_searches = sum(n for route, n in self.presets.jira.requests.items()
                                        if "/search" in route)
        self.security_after_stop()

    async def replay_dead_letters(self) -> None:
        """What a receiver rejected during the run is listed and replayed, as an operator would
        once the receiver is fixed; after that it must have arrived like everything else."""
        dead = self.view.dead_letters()
        if not dead:
            return
        assert self.daemon is not None
        config = str(self.daemon.config_path)
        code, out, err = await run_cli("dlq", "list", "--json", "--limit", "1000000",
                                       "--config", config)
        self.cli_outputs.append(out + err)
        if code != 0 or len(json.loads(out)) != dead:
            self.report.problems.append(f"bridge dlq list: exit {code}, {out[:300]} {err[-300:]}")
        code, out, err = await run_cli("dlq", "replay", "--config", config)
        self.cli_outputs.append(out + err)
        if code != 0:
            self.report.problems.append(f"bridge dlq replay exited {code}: {err[-300:]}")
        self.report.dead_letters_replayed += dead
        await wait_until(lambda: not self.view.dead_letters() and not any(self.view.depth().values()),
                       120.0, "replayed dead letters delivered", every=0.05, alive=self.daemon_trouble)

    def collect(self) -> dict[str, list[Received]]:
        out: list[Received] = []
        garbage = 0
        if self.events_file.exists():
            for line in self.events_file.read_bytes().splitlines():
                try:
                    out.append(Received.of("file", json.loads(line)))
                except ValueError:
                    garbage += 1
        if garbage:
            self.report.problems.append(f"{garbage} unreadable line(s) in the file sink's output")
        return {"file": out, "hook": list(self.hook.received)}

    # -- security: nothing secret anywhere, private files, loud TLS

    async def security_while_running(self) -> None:
        assert self.daemon is not None
        await self.daemon.wait_log("daemon_started", 30, since=self.daemon_mark)
        admin = [ln for ln in self.daemon.log_lines(self.daemon_mark)
                 if ln.get("event") == "daemon_started"][-1]
        host = str(admin["admin"]).rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost", "::1"):
            self.report.problems.append(f"admin server bound to {admin['admin']}, not localhost")
        auth = {"Authorization": f"Bearer {self.secrets.admin}"}
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://{admin['admin']}/metrics", headers=auth) as resp:
            self.metrics_text = await resp.text()
            if resp.status != 200:
                self.report.problems.append(f"/metrics answered {resp.status}")
        if "bridge_tls_verify_disabled" in self.metrics_text and any(
                ln.startswith("bridge_tls_verify_disabled{") and not ln.endswith(" 0.0")
                for ln in self.metrics_text.splitlines()):
            self.report.problems.append("TLS verification reported disabled, but it is on")
        for path in sorted(self.state_path.parent.iterdir()):  # the file, its -wal and -shm
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode != 0o600:
                self.report.problems.append(f"{path.name} has mode {oct(mode)}, not 0600")
        config = str(self.daemon.config_path)
        backup = self.workdir / "backups" / "bridge.db"
        for args in (("dlq", "list", "--json"), ("state", "items", "--json", "--limit", "5"),
                     ("state", "sweeps", "--json", "--limit", "50"), ("state", "check"),
                     ("state", "backup", "--dest", str(backup)), ("check-config", config)):
            code, out, err = await run_cli(*args, "--config", config)
            self.cli_outputs.append(out + err)
            if code != 0:
                self.report.problems.append(f"bridge {' '.join(args)} exited {code}: {err[-500:]}")
        self.backup = backup

    def security_after_stop(self) -> None:
        places: dict[str, bytes] = {
            "daemon log": self.daemon.logs().encode() if self.daemon else b"",
            "/metrics": self.metrics_text.encode(),
            "CLI output": "\n".join(self.cli_outputs).encode(),
            "webhook bodies": b"\n".join(self.hook.bodies),
        }
        for path in [self.events_file, *self.state_path.parent.glob("bridge.db*"),
                     *self.backup.parent.glob("*")]:
            if path.is_file():
                places[str(path.relative_to(self.workdir))] = path.read_bytes()
        if self.rsyslog is not None:
            places["rsyslog"] = self.rsyslog.output("tcp").read_bytes()
        for name, value in {**self.secrets.values(), **self.presets.secrets()}.items():
            for place, data in places.items():
                if value.encode() in data:
                    self.report.secret_leaks.append(f"the {name} secret appears in {place}")
        for path in [self.state_path, self.backup, self.events_file]:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode != 0o600:
                self.report.problems.append(f"{path.name} has mode {oct(mode)}, not 0600")

    async def teardown(self) -> None:
        if self.daemon is not None and self.daemon.proc is not None:
            self.expected_exit = True
            with contextlib.suppress(ProcessLookupError):
                await self.daemon.kill()
        await self.hook.stop()
        await self.presets.stop()
        for sim in self.sims:
            await sim.stop()
        if self.rsyslog is not None:
            await asyncio.to_thread(self.rsyslog.stop)


def write_figures(report: ChaosReport, path: Path) -> None:
    path.write_text(json.dumps(report.figures(), indent=2, sort_keys=True))


async def run_chaos(settings: ChaosSettings, workdir: Path, rsyslogd: str | None) -> ChaosReport:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    return await ChaosRun(settings, workdir).run(rsyslogd)

