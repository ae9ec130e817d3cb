"""The source contract: poll one scope, return what was seen and whether it was complete.

A source knows nothing about state, routing or sinks. It reports completeness honestly;
the diff decides what may be resolved.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, TypeVar

import structlog
from pydantic import Field

from bridge.baseline import Baseline
from bridge.components import ComponentConfig
from bridge.diff import TRACKED_FIELDS, ChangeRule
from bridge.http import HttpConfig, HttpContext, VendorError
from bridge.model import Item, Sweep
from bridge.sources.coverage import SOURCE_HEALTH, Coverage, health_items

log = structlog.get_logger(__name__)


ItemSink = Callable[[Sequence[Item]], Awaitable[None]]


class SourceConfig(ComponentConfig):
    """Scheduling and diff policy every source shares; subclasses add `type` and vendor settings."""

    interval: float = Field(default=300.0, ge=1.0, description="seconds between polls")
    jitter: float = Field(default=10.0, ge=0.0, description="random delay added to each poll")
    resolve_after_misses: int = Field(default=2, ge=1)
    tracked_fields: tuple[str, ...] = TRACKED_FIELDS
    # A label for routing and display (an org or tenant name); items carry it as `tenant`.
    tenant: str = ""
    # What each sink gets of a scope's first sweep (bridge/baseline.py): deliver | summary |
    # suppress; unset, each sink's kind decides (summary for ticketing and chat, else deliver).
    baseline: Baseline | None = None
    # Also sweep coverage checks as `source_health` items (bridge/sources/coverage.py): a
    # blind spot is then a `new` event routed like a finding, `resolved` when it recovers.
    # Off, coverage still shows in /readyz, the metric and the log.
    coverage_events: bool = False
    http: HttpConfig = Field(default_factory=HttpConfig)

    def build(self, http: HttpContext) -> Source[Any]:
        raise NotImplementedError(f"{type(self).__name__} does not build a source")


C = TypeVar("C", bound=SourceConfig)


class Source(ABC, Generic[C]):
    """One configured vendor connection, possibly covering several scopes (tenants)."""

    vendor: ClassVar[str]
    # The vendor's own name for people (titles of `source_health` items).
    display_name: ClassVar[str] = ""
    # Every item kind this source can produce: the stored state a sweep is diffed against.
    item_kinds: ClassVar[tuple[str, ...]]
    # Per-kind overrides of `tracked_fields`, where a kind changes in its own way.
    kind_tracked_fields: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def __init__(self, config: C) -> None:
        self.config = config
        # What this source can tell about its own blind spots, per scope (see `coverage`).
        self.coverage = Coverage()

    def health_kinds(self) -> tuple[str, ...]:
        """`(source_health,)` when coverage is swept as items, else nothing."""
        return (SOURCE_HEALTH,) if self.config.coverage_events else ()

    def health_items(self, scope: str, tenant: str | None = None) -> list[Item]:
        """The scope's coverage checks as `source_health` items (empty when not configured)."""
        if not self.config.coverage_events:
            return []
        return health_items(self.coverage.of(scope),
                            tenant=self.config.tenant if tenant is None else tenant,
                            vendor=self.display_name or self.vendor)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds this configured instance sweeps (a source may make some optional)."""
        return self.item_kinds

    @property
    def scopes(self) -> Sequence[str]:
        """State scopes this source sweeps; each is diffed and scheduled on its own."""
        return (self.config.name,)

    async def stream(self, scope: str, cursor: Mapping[str, str], emit: ItemSink) -> Sweep:
        """Sweep one scope, handing items to `emit` as pages arrive.

        The returned sweep carries completeness, cursor and notes; its `items` are empty
        because they were emitted. Sources whose sweeps can be huge override this so memory
        stays flat; the default emits a whole `poll` at once.
        """
        sweep = await self.poll(scope, cursor)
        await emit(sweep.items)
        return replace(sweep, items=())

    @abstractmethod
    async def poll(self, scope: str, cursor: Mapping[str, str]) -> Sweep:
        """Sweep one scope.

        Raise `VendorError` when nothing usable came back (bad key, first page failed); return
        a sweep marked incomplete when only part of the answer is trustworthy.
        """

    @property
    def change_rules(self) -> Mapping[str, ChangeRule]:
        """Per-kind rules for which tracked changes are events (see `bridge.diff`)."""
        return {}

    def requests(self, scope: str) -> int:
        """Vendor requests made so far for `scope`; its sweeps report the difference. Per
        scope, not per source: the scopes of a source (tenants) are swept at the same time,
        and a source-wide count would give each sweep the others' requests too."""
        return 0

    @property
    def enriches(self) -> bool:
        """Whether `enrich` does anything (lets a sweep skip looking for first-seen items)."""
        return False

    async def enrich(self, scope: str, items: Sequence[Item]) -> Sequence[Item]:
        """Add detail to items seen for the first time (costs requests, so it is bounded)."""
        return items

    async def close(self) -> None:
        """Release HTTP sessions; must not raise."""


@dataclass
class SweepParts:
    """One sweep assembled from independent parts (a paged list, a snapshot, a probe), each
    speaking only for its own kinds, so that one failing endpoint spoils only its kinds.

    An empty list is never evidence of absence, however well-formed: a vendor hiccup that
    returns `[]` looks exactly like "everything was fixed". Such a kind is left out of `kinds`,
    so its stored items are left alone until the list has entries again or the vendor marks
    them resolved one by one (which is how our vendors report fixes).
    """

    scope: str
    items: list[Item] = field(default_factory=list)
    kinds: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cursor: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, items: Iterable[Item], complete: bool) -> None:
        """Items of one kind, and whether the answer they came from was complete."""
        batch = [i for i in items if i.kind == kind]
        self.items.extend(batch)
        if complete and not batch:
            return
        self.kinds[kind] = self.kinds.get(kind, True) and complete

    def incomplete(self, kinds: Iterable[str], note: str) -> None:
        """These kinds could not be swept: nothing of theirs may be resolved this time."""
        for kind in kinds:
            self.kinds[kind] = False
        self.notes.append(note)

    def note(self, text: str) -> None:
        self.notes.append(text)

    async def attempt(
        self,
        kinds: Sequence[str],
        what: str,
        part: Callable[[], Awaitable[None]],
        explain: Callable[[VendorError], str] = str,
    ) -> VendorError | None:
        """Run one part. A vendor error spoils only its `kinds` and is returned (a caller may
        decide the rest is pointless), except one that fails the whole sweep: a bad key, or a
        redirect to another origin."""
        try:
            await part()
        except VendorError as exc:
            if exc.fails_sweep:
                raise
            self.incomplete(kinds, f"{what}: {explain(exc)}")
            return exc
        return None

    def build(self) -> Sweep:
        return Sweep(scope=self.scope, items=tuple(self.items), kinds=dict(self.kinds),
                     cursor=dict(self.cursor), notes=tuple(self.notes))


class ConditionLog:
    """Logs a lasting condition (a missing licence, a withdrawn consent) once when it starts
    and once when it ends, instead of once per sweep: the sweep notes carry it meanwhile."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._state: dict[tuple[str, str], str] = {}

    def report(self, scope: str, subject: str, state: str, *, ok: bool, **detail: Any) -> None:
        """Called every sweep; logs only when `subject`'s state in `scope` changes."""
        key = (scope, subject)
        if ok:
            if self._state.pop(key, None) is not None:
                log.info("source_condition_cleared", source=self.source, scope=scope,
                         subject=subject, state=state)
            return
        if self._state.get(key) != state:
            self._state[key] = state
            log.warning("source_condition", source=self.source, scope=scope, subject=subject,
                        state=state, **detail)
