"""Vendor rows into items one row at a time, so that a row we cannot read costs only itself.

Validating a whole page at once would let one poison row (a status that is a list, a missing
id) fail the page, and with it every later page of the list, every sweep: one row would block
its whole scope. Here a page whose rows all validate costs one validation call, as before;
otherwise each row is validated on its own, and each is mapped on its own. A row that fails
becomes an `Unusable` in its place: the walkers in `bridge.sources.paging` count it towards the list's
total and keep its position (so offset overlaps still line up), but emit nothing for it, and
mark the pass incomplete: a list with a row we could not read is not evidence that anything in
it is gone. Each skipped row is counted (`bridge_items_skipped_total`) and logged with its id,
in one line per page: a vendor renaming a field makes every row unusable at once, and that must
not become a log line per row.

A source's longest lists (ScanOrbit findings, Aether365 results, Ayliea recommendations) are
also read without pydantic (`to_items(read=...)`) when a row's fields have the shapes the model
demands; the pieces those readers share live here: `Remembered` (vendor words mapped once),
`row_values` (a row's fields in one call) and `ITEM_ORDER` (Item built positionally).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from pydantic import BaseModel, TypeAdapter, ValidationError

from bridge import metrics
from bridge.model import Item

log = structlog.get_logger(__name__)

# What reading vendor data into an item may raise: pydantic's ValidationError is a ValueError;
# the rest come from mapping code meeting a value of a type it did not expect.
ROW_ERRORS = (ValueError, TypeError, LookupError, AttributeError)
_NOTE_EXAMPLES = 3  # skipped rows a sweep note names
_LOG_EXAMPLES = 10  # skipped rows a log line names
M = TypeVar("M", bound=BaseModel)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
MEMO = 256  # distinct vendor words a `Remembered` keeps
# The row readers build Item positionally, which is measurably cheaper than by keyword 100k
# times a sweep; this is the order they rely on, checked at import so a new field cannot
# shift them silently.
ITEM_ORDER = ("kind", "key", "title", "severity", "active", "vendor_severity", "status",
              "tenant", "resolution", "judged", "attributes", "raw")
if tuple(f.name for f in dataclasses.fields(Item))[:len(ITEM_ORDER)] != ITEM_ORDER:
    raise ImportError(f"the row readers of bridge.sources build Item with the fields "
                      f"{ITEM_ORDER} in that order: update them (grep ITEM_ORDER)")


class Remembered(dict[K, V], Generic[K, V]):
    """What `compute` makes of a vendor word (a status, a severity), computed once and then
    looked up: `remembered[word]`. A handful of words come 100k times a sweep, so a hit is a
    plain dict lookup (`__missing__` runs only on a miss); at most `bound` are kept, so a
    vendor sending a different word every row cannot grow it."""

    def __init__(self, compute: Callable[[K], V], bound: int = MEMO) -> None:
        super().__init__()
        self._compute = compute
        self._bound = bound

    def __missing__(self, key: K) -> V:
        value = self._compute(key)
        if len(self) < self._bound:
            self[key] = value
        return value


def row_values(names: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A function giving a row's `names` fields as a tuple, None for one left out: all at once
    by `operator.itemgetter` (in C) when every field is present, as in a healthy page."""
    names = tuple(names)
    if len(names) < 2:
        raise ValueError("row_values takes two names or more (itemgetter of one is no tuple)")
    take = operator.itemgetter(*names)

    def values(raw: dict[str, Any]) -> tuple[Any, ...]:
        try:
            return take(raw)  # type: ignore[no-any-return]
        except KeyError:  # some field left out rather than null
            return tuple(map(raw.get, names))

    return values


@dataclass(frozen=True, slots=True)
class Unusable:
    """A row that could not be read: it holds its place in the list, and nothing else."""

    # The row's own id when it has one, else its position in the list ("<row 17>"): stable
    # across pages, so the overlap of two offset pages still compares equal.
    key: str
    reason: str


def row_key(raw: Any, id_field: str) -> str | None:
    """The id a row states, if it states a usable one."""
    value = raw.get(id_field) if isinstance(raw, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def to_items(
    rows: Sequence[Any],
    model: type[M],
    to_item: Callable[[Mapping[str, Any], M], Item],
    *,
    source: str,
    kind: str,
    at: str,
    id_field: str = "id",
    first: int = 0,
    read: Callable[[Any], Item | None] | None = None,
) -> list[Item | Unusable]:
    """Each row validated as `model` and mapped by `to_item`; a row that fails either becomes
    an `Unusable`, counted and logged.

    The whole list is validated in one call first, which is what a healthy page costs; only
    when that fails are the rows validated one by one to find the culprits. `at` names where
    the rows sit in the answer (`data`), for messages like `data.3.status`; `first` is the
    list position of `rows[0]` (for rows without an id).

    `read`, when given, maps a row without the model: it returns None for a row it is not sure
    `model` accepts, which then takes the path above (validated on its own, so its problem is
    reported as it would be without `read`). It must return exactly the item `to_item` would,
    and raise what `to_item` would raise.
    """
    item_of: Callable[[int, Any], Item]
    if read is None:
        try:
            checked: list[M] | None = _list_of(model).validate_python(rows)
        except ValidationError:
            checked = None

        def item_of(n: int, raw: Any) -> Item:
            return to_item(raw, checked[n] if checked is not None else _one(model, raw))
    else:
        def item_of(n: int, raw: Any) -> Item:
            item = read(raw)  # the model only meets the rows `read` turns down
            return item if item is not None else to_item(raw, _one(model, raw))

    out: list[Item | Unusable] = []
    skipped: list[Unusable] = []
    for n, raw in enumerate(rows):
        try:
            out.append(item_of(n, raw))
            continue
        except ROW_ERRORS as exc:
            unusable = Unusable(row_key(raw, id_field) or f"<row {first + n}>",
                                f"{at}.{n}{_problem(exc)}")
        skipped.append(unusable)
        out.append(unusable)
    _report(skipped, source, kind)
    return out


def _report(skipped: Sequence[Unusable], source: str, kind: str) -> None:
    if skipped:
        metrics.ITEMS_SKIPPED.labels(source, kind).inc(len(skipped))
        log.warning("vendor_items_skipped", source=source, kind=kind, count=len(skipped),
                    ids=[u.key for u in skipped[:_LOG_EXAMPLES]],
                    problems=[u.reason for u in skipped[:_LOG_EXAMPLES]],
                    hint="the sweep stays incomplete (nothing resolves) until the vendor fixes "
                         "these rows")


@functools.cache
def _list_of(model: type[M]) -> TypeAdapter[list[M]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def _one(model: type[M], raw: Any) -> M:
    if not isinstance(raw, dict):
        raise TypeError(f"the row is not an object but {type(raw).__name__}")
    return model.model_validate(raw)


def _problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = "".join(f".{p}" for p in error["loc"])
        return f"{where}: {error['msg']}"
    return f": {type(exc).__name__}: {exc}"[:300]


def skipped_note(what: str, skipped: Sequence[Unusable]) -> str:
    """A sweep note naming the first few skipped rows and why."""
    examples = "; ".join(f"{u.key}: {u.reason}" for u in skipped[:_NOTE_EXAMPLES])
    more = f"; and {len(skipped) - _NOTE_EXAMPLES} more" if len(skipped) > _NOTE_EXAMPLES else ""
    return (f"{what}: skipped {len(skipped)} row(s) that could not be read ({examples}{more}); "
            "nothing is resolved while they are there")
