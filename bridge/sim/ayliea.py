"""Ayliea simulator: AI-security scores, recommendations and AI platform discovery.

Follows vendor-docs/ayliea-api-overview.txt and VENDOR_NOTES: `X-API-Key` with scopes (a 403
names the missing scope; an organization not on the Enterprise tier, the only one with API
access, is refused with a 403 that says so), 60 req/min per key with `X-RateLimit-*` headers on every answer,
`{"error": "message"}` errors, and recommendations paged by `limit`/`offset` with no total: the
list ends at a short page, and an insert ahead of the offset shifts everything after it.
The discovery shape is our guess; the vendor has not confirmed it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
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
    api_key,
    build_app,
    int_param,
    json_response,
    rand_uuid,
)

Record = dict[str, Any]

SCOPES = ("scores:read", "recommendations:read", "discovery:read")
REC_STATUSES = ("open", "in_progress", "completed", "dismissed")
FRAMEWORKS = ("ai-security", "nist-ai-rmf", "iso-42001", "eu-ai-act")
CATEGORIES = ("governance", "data-protection", "access-control", "monitoring", "vendor-risk")
_REC_TITLES = (
    "Publish an acceptable-use policy for generative AI",
    "Block unsanctioned AI tools at the web proxy",
    "Enable DLP for prompts sent to external AI services",
    "Inventory AI models used in production",
    "Require SSO for all AI SaaS platforms",
    "Log and review AI assistant admin actions",
    "Assess AI vendors for data retention terms",
    "Train staff on prompt-injection risks",
    "Classify data allowed in AI prompts",
    "Assign an owner for AI risk management",
)
_PLATFORMS = (
    ("ChatGPT", "OpenAI", "api.openai.com"),
    ("Microsoft Copilot", "Microsoft", "copilot.microsoft.com"),
    ("Claude", "Anthropic", "claude.ai"),
    ("Gemini", "Google", "gemini.google.com"),
    ("Perplexity", "Perplexity AI", "www.perplexity.ai"),
)
# Ids that sort before any random UUID, newer ones first: a drift insert lands at the head.
_HEAD_PREFIX = "00000000-0000-4000-8000-"
_HEAD_MAX = 999_999_999_999


def grade_for(score: float) -> str:
    for floor, grade in ((90, "A"), (80, "B"), (70, "C"), (60, "D")):
        if score >= floor:
            return grade
    return "F"


class AylieaWorld(SimWorld):
    """One Ayliea organization: scoped API keys, recommendations, scores, discovered platforms."""

    vendor = "ayliea"
    prefix = "/api/v1"

    def __init__(
        self,
        *,
        keys: Mapping[str, Iterable[str]] | None = None,
        seed: int = 0,
        rate_limit: int = 60,
        rate_window: float = 60.0,
        send_retry_after: bool = True,
        clock: Clock | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(rate_limit=rate_limit, rate_window=rate_window, clock=clock,
                         send_retry_after=send_retry_after, seed=seed)
        self.timeline = Timeline(now)
        self.keys: dict[str, set[str]] = {k: set(v) for k, v in (keys or {}).items()}
        self.recommendations: dict[str, Record] = {}
        self.scores: dict[str, Record] = {}
        self.platforms: dict[str, Record] = {}
        self.scanned_at: str | None = None
        self._head_seq = 0
        # The docs: "Availability: Enterprise tier only". Any other plan: every call is a 403.
        self.plan = "enterprise"

    # -- keys -------------------------------------------------------------------------------

    def add_key(self, key: str, scopes: Iterable[str] = SCOPES) -> None:
        self.keys[key] = set(scopes)

    def revoke(self, key: str) -> None:
        self.keys.pop(key, None)

    # -- recommendations --------------------------------------------------------------------

    def add_recommendation(self, **overrides: Any) -> Record:
        """A new open recommendation; any field may be overridden (`priority=1`)."""
        rng = self.rng
        stamp = self.timeline.stamp()
        rec: Record = {
            "id": rand_uuid(rng), "title": rng.choice(_REC_TITLES),
            "description": "Recommended by the latest assessment.",
            "priority": rng.randint(1, 5), "status": "open",
            "framework_id": rng.choice(FRAMEWORKS), "category": rng.choice(CATEGORIES),
            "created_at": stamp, "updated_at": stamp,
        }
        rec.update(overrides)
        self.recommendations[rec["id"]] = rec
        self.touch()
        return rec

    def insert_head(self) -> Record:
        """A recommendation that sorts before every other (priority 1, smallest id)."""
        self._head_seq += 1
        return self.add_recommendation(
            id=f"{_HEAD_PREFIX}{_HEAD_MAX - self._head_seq:012d}", priority=1)

    def update_recommendation(self, rec_id: str, **changes: Any) -> Record:
        rec = self.recommendations[rec_id]
        rec.update(changes, updated_at=self.timeline.stamp())
        self.touch()
        return rec

    def set_status(self, rec_id: str, status: str) -> Record:
        return self.update_recommendation(rec_id, status=status)

    def remove_recommendation(self, rec_id: str) -> Record:
        rec = self.recommendations.pop(rec_id)
        self.touch()
        return rec

    def ordered(self) -> list[Record]:
        """Recommendations by priority then id."""
        return self.view("ordered", lambda: sorted(self.recommendations.values(),
                                                   key=lambda r: (r["priority"], r["id"])))

    # -- scores and discovery ---------------------------------------------------------------

    def set_score(self, framework_id: str, score: float, grade: str | None = None,
                  completed_at: str | None = None) -> Record:
        """The latest assessment of a framework; the grade follows the score unless given."""
        record = {"framework_id": framework_id, "overall_score": score,
                  "grade": grade or grade_for(score),
                  "completed_at": completed_at or self.timeline.stamp()}
        self.scores[framework_id] = record
        return record

    def remove_score(self, framework_id: str) -> None:
        del self.scores[framework_id]

    def add_platform(self, name: str | None = None, vendor: str | None = None, *,
                     confidence: float | None = None, evidence: list[str] | None = None,
                     platform_id: str | None = None) -> Record:
        rng = self.rng
        known = next((p for p in _PLATFORMS if p[0] == name), None) or rng.choice(_PLATFORMS)
        platform: Record = {
            "id": platform_id or rand_uuid(rng), "name": name or known[0],
            "vendor": vendor or known[1],
            "confidence": round(rng.uniform(0.55, 0.99), 2) if confidence is None else confidence,
            "detected_at": self.timeline.stamp(),
            "evidence": evidence if evidence is not None else [f"DNS queries to {known[2]}",
                                                              "Browser extension observed"],
        }
        self.platforms[platform["id"]] = platform
        self.scanned_at = platform["detected_at"]
        return platform

    def update_platform(self, platform_id: str, **changes: Any) -> Record:
        platform = self.platforms[platform_id]
        platform.update(changes)
        return platform

    def remove_platform(self, platform_id: str) -> None:
        del self.platforms[platform_id]

    def complete_discovery(self) -> str:
        """A discovery scan finished now (even with nothing new found)."""
        self.scanned_at = self.timeline.stamp()
        return self.scanned_at

    # -- SimWorld hooks ---------------------------------------------------------------------

    def authenticate(self, request: web.Request) -> Principal | web.Response:
        key = api_key(request)
        if key is None:
            return self.error(401, "UNAUTHORIZED", "Missing API key: send the X-API-Key header")
        scopes = self.keys.get(key)
        if scopes is None:
            return self.error(401, "UNAUTHORIZED", "Invalid API key")
        if self.plan != "enterprise":
            return self.error(403, "FORBIDDEN", "API access is only available on the "
                              f"Enterprise plan (current plan: {self.plan})")
        return Principal(limit_key=f"key:{key}", scopes=frozenset(scopes))

    def error_body(self, status: int, code: str, message: str) -> Record:
        return {"error": message}

    def page_of(self, request: web.Request) -> int | None:
        """Ayliea pages by offset: a fault's `page` is offset // limit + 1."""
        limit, offset = request.query.get("limit", "20"), request.query.get("offset", "0")
        if not (limit.isdigit() and offset.isdigit()) or int(limit) < 1:
            return None
        return int(offset) // int(limit) + 1

    def decorate(self, response: web.StreamResponse, principal: Principal) -> None:
        key = principal.limit_key
        limiter = self.limiter
        response.headers["X-RateLimit-Limit"] = str(limiter.limit)
        response.headers["X-RateLimit-Remaining"] = str(limiter.remaining(key))
        # Rounded up: a client that waits until the reset must find the window open.
        response.headers["X-RateLimit-Reset"] = str(math.ceil(time.time()
                                                              + limiter.reset_in(key)))

    def drift(self, request: web.Request, count: int) -> None:
        for _ in range(count):
            self.insert_head()

    def random_step(self, rng: Random) -> str:
        """Add or progress a recommendation, move a score, or discover a platform."""
        action = rng.choices(("add", "progress", "score", "platform"), weights=(3, 4, 2, 1))[0]
        active = sorted(i for i, r in self.recommendations.items()
                        if r["status"] in ("open", "in_progress"))
        if action == "progress" and active:
            rec = self.recommendations[rng.choice(active)]
            status = "in_progress" if rec["status"] == "open" else rng.choice(
                ("completed", "completed", "dismissed"))
            self.set_status(rec["id"], status)
            return f"ayliea recommendation {rec['id']} -> {status}"
        if action == "score" and self.scores:
            framework = rng.choice(sorted(self.scores))
            old = float(self.scores[framework]["overall_score"])
            new = max(0, min(100, old + rng.choice((-12, -6, 5, 9))))
            self.set_score(framework, new)
            return f"ayliea score {framework} {old:g} -> {new:g}"
        if action == "platform":
            platform = self.add_platform()
            return f"ayliea discovered {platform['name']} ({platform['confidence']})"
        rec = self.add_recommendation()
        return f"ayliea new recommendation {rec['id']} (priority {rec['priority']})"


def _require(request: web.Request, scope: str) -> None:
    if scope not in request[PRINCIPAL].scopes:
        raise SimError(403, "FORBIDDEN", f"API key missing required scope: {scope}")


class _Routes:
    def __init__(self, world: AylieaWorld) -> None:
        self.world = world

    async def recommendations(self, request: web.Request) -> web.Response:
        _require(request, "recommendations:read")
        limit = int_param(request, "limit", 20, high=100)
        offset = int_param(request, "offset", 0, low=0)
        return json_response(
            {"recommendations": self.world.ordered()[offset : offset + limit]})

    async def scores(self, request: web.Request) -> web.Response:
        _require(request, "scores:read")
        scores = self.world.scores
        return json_response({"scores": [scores[k] for k in sorted(scores)]})

    async def discovery(self, request: web.Request) -> web.Response:
        _require(request, "discovery:read")
        world = self.world
        return json_response({"platforms": list(world.platforms.values()),
                              "scanned_at": world.scanned_at})


def make_app(world: AylieaWorld) -> web.Application:
    r = _Routes(world)
    p = world.prefix
    return build_app(world, [
        web.get(f"{p}/recommendations", r.recommendations),
        web.get(f"{p}/scores", r.scores),
        web.get(f"{p}/discovery", r.discovery),
    ])

