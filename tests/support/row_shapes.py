"""The check every source's fast row reader is held to (`read` passed to
`bridge.sources.rows.to_items`): it must never accept a row the source's pydantic model
refuses, nor map one differently.

A vendor's rows are generated with every field in every shape a JSON vendor can send it
(missing, null, empty, text, numbers, booleans, lists, objects), one field at a time and in
pairs; each row is read both ways and the answers compared, attributes (their order and the
types of their values) included. Then the rows go through `to_items` as one page, with and
without `read`. Each source's test file gives its base row, its fields, its own words, and the
slow path (pydantic, then a plain reference mapping).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import astuple
from typing import Any

from bridge.model import Item
from bridge.sources.rows import ROW_ERRORS, Unusable, to_items

MISSING = object()  # a shape: the field left out
COMMON_SHAPES: tuple[Any, ...] = ("ünï\ufffd", 0, 1, -1, 1.5, 2**63, True, False, [], ["a"], {},
                                  {"a": [1, {"b": None}]})


def shapes(*words: Any) -> tuple[Any, ...]:
    """Missing, null, empty and "x", then a vendor's own words, then `COMMON_SHAPES`."""
    return (MISSING, None, "", "x", *words, *COMMON_SHAPES)


def with_fields(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(base)
    for k, v in changes.items():
        if v is MISSING:
            row.pop(k, None)
        else:
            row[k] = v
    return row


def rows(base: Mapping[str, Any], fields: tuple[str, ...], all_shapes: tuple[Any, ...],
         pair_shapes: int, not_objects: tuple[Any, ...],
         pair_fields: tuple[str, ...] | None = None) -> Iterator[Any]:
    """The base row, values that are no object at all, every field in every shape, and every
    pair of fields (of `pair_fields`, by default all) in the first `pair_shapes` shapes."""
    yield dict(base)
    yield from not_objects
    for field in fields:
        for shape in all_shapes:
            yield with_fields(base, {field: shape})
    for a, b in itertools.combinations(fields if pair_fields is None else pair_fields, 2):
        for x, y in itertools.product(all_shapes[:pair_shapes], repeat=2):
            yield with_fields(base, {a: x, b: y})


def fields_of(item: Item) -> tuple[Any, ...]:
    """Everything an item holds, attributes in order and with their value types (True is not 1)."""
    return (*astuple(item), [(k, type(v), v) for k, v in item.attributes.items()])


def slow_path(model: type[Any], to_item: Callable[[Any, Any], Item],
              reference: Callable[[dict[str, Any], Any], Item]) -> Callable[[Any], Item | str]:
    """The path without `read`: the model, then `reference` (the mapping written plainly, the
    specification the tuned one is held to, and `to_item` is checked against it); or the name
    of what stops it."""
    def slow(raw: Any) -> Item | str:
        try:
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            row = model.model_validate(raw)
            item = reference(raw, row)
        except ROW_ERRORS as exc:
            return type(exc).__name__
        assert fields_of(to_item(raw, row)) == fields_of(item)
        return item

    return slow


def check_read(read: Callable[[Any], Item | None], slow: Callable[[Any], Item | str],
               generated: Iterator[Any]) -> None:
    """`read` agrees with `slow` (an item, or the name of what stopped it) on every row it
    does not leave to the model, and really takes the shortcut for many of them."""
    seen = fast = 0
    for raw in generated:
        want = slow(raw)
        try:
            got: Item | str | None = read(raw)
        except ROW_ERRORS as exc:
            got = type(exc).__name__
        seen += 1
        if got is None:
            continue  # left to the model: whatever it says stands
        fast += 1
        assert isinstance(want, Item), (raw, got, want)  # never accepts what the model refuses
        assert isinstance(got, Item) and fields_of(got) == fields_of(want), raw
    assert fast > seen / 4  # the shortcut is really taken (the usual shapes, and many others)


def check_page(page: list[Any], model: type[Any], to_item: Callable[[Any, Any], Item],
               read: Callable[[Any], Item | None], **where: Any) -> None:
    """One page through `to_items` with and without `read`: the same items, the same
    unusable rows with the same reasons (`data.3.status: Input should be ...`)."""
    with_read = to_items(page, model, to_item, read=read, **where)
    without = to_items(page, model, to_item, **where)
    assert len(with_read) == len(without) == len(page)
    for got, want in zip(with_read, without, strict=True):
        if isinstance(want, Unusable):
            assert got == want
        else:
            assert isinstance(got, Item) and fields_of(got) == fields_of(want)
    assert any(isinstance(r, Unusable) for r in without)
