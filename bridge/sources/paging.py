"""How to walk a vendor's list without ever mistaking a shifting or broken list for a short one.

Two shapes exist among our vendors: numbered pages with totals (ScanOrbit, Aether365) and
offset pages that end at a short page, with no total (Ayliea). Both walkers dedupe by key (a
list that shifts while we page serves some rows twice) and return a `Pass` that says whether it
is complete, with notes saying why not. Completeness is what lets the diff resolve by absence,
so every doubt counts against it:

- numbered: `total` changing between pages, an empty page before the last, or a unique count
  that does not match `total`;
- offset: consecutive pages overlap by `overlap` rows, and the overlap must match exactly. Any
  insert or delete ahead of the cursor shifts the boundary and breaks the match, which is the
  only way to notice a *skipped* row in a list without totals (a doubled row alone would miss
  deletions). It costs one row per page: ceil((N - overlap) / (limit - overlap)) requests.

A failed page ends the pass as incomplete with the rows so far (they may still create and change
items); errors for which `fatal` is true (a bad key, a missing permission, a redirect to another
origin) propagate to the caller, which knows what they mean for the whole sweep. A row the
source could not read (`bridge.sources.rows.Unusable`) keeps its place and its key, so totals
and overlaps still add up, but it is not handed on, and it makes the pass incomplete.
The walkers know nothing about items: sources validate rows and map them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bridge import progress
from bridge.http import VendorError
from bridge.sources.rows import Unusable, skipped_note

T = TypeVar("T")
Fatal = Callable[[VendorError], bool]


def list_is_lost(exc: VendorError) -> bool:
    """A bad key, a missing permission or a redirect elsewhere is about the whole list, not one
    page of it."""
    return exc.fails_sweep or exc.kind == "forbidden"


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One validated page: its rows, and the vendor's totals when it sends them."""

    rows: Sequence[T | Unusable]
    total: int
    pages: int


def page_count(total: int, limit: int, given: int | None = None) -> int:
    """`totalPages` when the vendor sends it, else computed (Aether365 sometimes omits it)."""
    if given is not None:
        return given
    return math.ceil(total / limit) if limit > 0 else 0


@dataclass(slots=True)
class Pass(Generic[T]):
    """The rows of one walk over a list, unique by key, in the order first served."""

    rows: dict[str, T] = field(default_factory=dict)
    # Every key served: the key itself while rows are kept, its `hash` when they are streamed
    # (see `take_new`).
    keys: set[str | int] = field(default_factory=set)
    complete: bool = True
    notes: list[str] = field(default_factory=list)
    drift: bool = False
    requests: int = 0
    # Rows served that could not be read: they count as served, and spoil the pass.
    unusable: list[Unusable] = field(default_factory=list)

    def take_new(self, rows: Sequence[T | Unusable], key: Callable[[T], str], *, keep: bool,
                 where: str) -> list[T]:
        """The rows not served before in this pass (a shifting list serves some twice).

        A streamed pass (`keep` false) remembers each key's hash, not the key: the vendor's
        key strings would otherwise live until the walk ends, beside the store's copies of the
        same keys that the diff holds (24 MB of a 300,000-finding steady sweep's 250 MB peak).
        Two keys of one hash make the second row look served already. That can only lose a
        row, so the unique count falls short of the vendor's total, which `numbered` checks:
        the pass is incomplete, and nothing is resolved by absence. (Only a list that also
        served one row more than its total says would hide it: such a collision of 64-bit
        hashes is ~1 in 400 million 300,000-row sweeps, and it would have to meet that drift
        on that page.)"""
        fresh: list[T] = []
        skipped: list[Unusable] = []
        # Locals and `_key` inlined: this runs once per row of every list (100k a sweep).
        keys, kept, add, append = self.keys, self.rows, self.keys.add, fresh.append
        for row in rows:
            if isinstance(row, Unusable):
                if (m := row.key if keep else hash(row.key)) not in keys:
                    add(m)
                    skipped.append(row)
                continue
            k = key(row)
            if (m := k if keep else hash(k)) in keys:
                continue
            add(m)
            append(row)
            if keep:
                kept[k] = row
        if skipped:
            self.unusable.extend(skipped)
            self.problem(skipped_note(where, skipped))
        return fresh

    def problem(self, note: str, *, drift: bool = False) -> None:
        self.complete = False
        self.drift = self.drift or drift
        self.notes.append(note)


def _key(row: T | Unusable, key: Callable[[T], str]) -> str:
    return row.key if isinstance(row, Unusable) else key(row)


async def numbered(
    fetch: Callable[[int], Awaitable[Page[T]]],
    key: Callable[[T], str],
    *,
    what: str,
    fatal: Fatal = list_is_lost,
    on_rows: Callable[[list[T]], Awaitable[None]] | None = None,
    prefetch: int = 0,
) -> Pass[T]:
    """Pages 1..N of a list with totals; `fetch(page)` returns one validated page.

    With `on_rows`, each page's new rows are handed over as they arrive instead of collected
    (a 100k-row list then never sits in memory), and up to `prefetch` further pages are
    requested while the caller works on the current one.
    """
    out: Pass[T] = Pass()
    total: int | None = None
    pages, page = 1, 1
    ahead: dict[int, asyncio.Future[Page[T]]] = {}
    try:
        while page <= pages:
            try:
                task = ahead.pop(page, None)
                got = await (task if task is not None else fetch(page))
            except VendorError as exc:
                if fatal(exc):
                    raise
                out.problem(f"{what} page {page}: {exc}")
                return out
            out.requests += 1
            if total is None:
                total, pages = got.total, got.pages
            elif got.total != total:
                out.problem(f"drift: {what} total changed from {total} to {got.total} at page "
                            f"{page}", drift=True)
                total, pages = got.total, max(pages, got.pages)
            progress.page(what, page, pages)
            for nxt in range(page + 1, min(pages, page + prefetch) + 1):
                if nxt not in ahead:
                    ahead[nxt] = asyncio.ensure_future(fetch(nxt))
            if ahead:
                await asyncio.sleep(0)  # let those requests reach the wire before our CPU work
            fresh = out.take_new(got.rows, key, keep=on_rows is None, where=f"{what} page {page}")
            if on_rows is not None:
                await on_rows(fresh)
            if not got.rows and page < pages:
                out.problem(f"{what} page {page} of {pages} was empty")
            page += 1
    finally:
        for pending in ahead.values():
            pending.cancel()
        for pending in ahead.values():
            with contextlib.suppress(BaseException):
                await pending
    if total is not None and len(out.keys) != total:
        out.problem(f"drift: {len(out.keys)} unique {what} but total says {total}", drift=True)
    return out


async def by_offset(
    fetch: Callable[[int, int], Awaitable[Sequence[T | Unusable]]],
    key: Callable[[T], str],
    *,
    limit: int,
    overlap: int,
    what: str,
    max_pages: int = 10_000,
    fatal: Fatal = list_is_lost,
) -> Pass[T]:
    """`fetch(offset, limit)` until a short page, consecutive pages overlapping by `overlap`."""
    if not 0 <= overlap < limit:
        raise ValueError("overlap must be >= 0 and < limit")
    out: Pass[T] = Pass()
    offset = 0
    tail: list[str] = []  # keys of the previous page's last `overlap` rows
    for _ in range(max_pages):
        try:
            rows = await fetch(offset, limit)
        except VendorError as exc:
            if fatal(exc):
                raise
            out.problem(f"{what} at offset {offset}: {exc}")
            return out
        out.requests += 1
        progress.page(what, out.requests, None)  # no total: a short page ends the list
        head = [_key(r, key) for r in rows[: len(tail)]]
        if head != tail:
            out.problem(f"drift: {what} shifted while paging (rows at offset {offset} are not "
                        "the ones the previous page ended with)", drift=True)
            return out
        fresh: list[T | Unusable] = []
        served: set[str] = set()
        for row in rows[len(tail):]:
            k = _key(row, key)
            if k in out.keys or k in served:
                out.problem(f"drift: {what} served {k} twice", drift=True)
            else:
                served.add(k)
                fresh.append(row)
        out.take_new(fresh, key, keep=True, where=f"{what} at offset {offset}")
        if len(rows) < limit:
            return out
        tail = [_key(r, key) for r in rows[limit - overlap:]] if overlap else []
        offset += limit - overlap
    out.problem(f"{what}: stopped after {max_pages} pages")
    return out


async def with_drift_retries(
    walk: Callable[[], Awaitable[Pass[T]]],
    retries: int,
    on_retry: Callable[[Pass[T]], None] | None = None,
) -> Pass[T]:
    """Walk again (up to `retries` times) when a pass was spoiled by drift: the list usually
    holds still long enough for a clean second pass. Other problems are not retried here."""
    result = await walk()
    for _ in range(retries):
        if result.complete or not result.drift:
            break
        if on_retry is not None:
            on_retry(result)
        spent = result.requests
        result = await walk()
        result.requests += spent
    return result
