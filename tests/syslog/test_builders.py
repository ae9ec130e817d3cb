"""The compiled (`exec`'d) field builders and escapers that CEF and LEEF run are byte-identical to
their plain-Python references (bridge/sinks/formats/builders.py), for any event, any settings,
every LEEF delimiter, and through fitting too."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.model import Event
from bridge.sinks.formats.builders import COMPILED, PLAIN, Escaper, Implementation, PlainEscaper
from bridge.sinks.formats.cef import HEADER_ESCAPES, VALUE_ESCAPES, CefConfig, CefEncoder
from bridge.sinks.formats.common import FitError, Oversize
from bridge.sinks.formats.kv import KvEncoder
from bridge.sinks.formats.leef import HEADER_ESCAPES as LEEF_HEADER_ESCAPES
from bridge.sinks.formats.leef import LeefConfig, LeefEncoder, value_escapes
from tests.syslog.events import adversarial_events
from tests.syslog.strategies import (
    ASCII_DELIMITERS,
    cef_configs,
    delimiters,
    events,
    events_with_paths,
    leef_configs,
    texts,
)

ADVERSARIAL = adversarial_events()
any_events = st.lists(st.one_of(events_with_paths(), events(), st.sampled_from(ADVERSARIAL)),
                      min_size=1, max_size=4)
budgets = st.lists(st.tuples(st.integers(200, 3000), st.sampled_from(["truncate", "split"])),
                   min_size=1, max_size=2)


def fitted(encoder: KvEncoder, event: Event, limit: int, mode: Oversize) -> list[str] | str:
    try:
        return encoder.fit(event, limit, mode)
    except FitError as exc:
        return f"FitError: {exc}"


def same_output(make: Callable[[Implementation], KvEncoder], batch: list[Event],
                fits: list[tuple[int, Oversize]]) -> None:
    plain, compiled = make(PLAIN), make(COMPILED)
    assert plain.escape_value is not compiled.escape_value  # really two implementations
    for event in batch:
        assert compiled.encode(event) == plain.encode(event)
        assert compiled.pairs(event) == plain.pairs(event)
        assert compiled.record(event).render() == plain.record(event).render()
        for limit, mode in fits:
            assert fitted(compiled, event, limit, mode) == fitted(plain, event, limit, mode)


@settings(max_examples=150, deadline=None)
@given(cef_configs(), any_events, budgets)
def test_cef_compiled_is_the_plain_encoder(cfg: CefConfig, batch: list[Event],
                                          fits: list[tuple[int, Oversize]]) -> None:
    same_output(lambda impl: CefEncoder(cfg, impl), batch, fits)


@settings(max_examples=150, deadline=None)
@given(leef_configs(), any_events, budgets)
def test_leef_compiled_is_the_plain_encoder(cfg: LeefConfig, batch: list[Event],
                                           fits: list[tuple[int, Oversize]]) -> None:
    same_output(lambda impl: LeefEncoder(cfg, impl), batch, fits)


@pytest.mark.parametrize("delimiter", ASCII_DELIMITERS)
def test_every_ascii_delimiter_on_the_adversarial_events(delimiter: str) -> None:
    cfg = LeefConfig(delimiter=delimiter, max_field_length=300)
    same_output(lambda impl: LeefEncoder(cfg, impl), ADVERSARIAL,
                [(700, "truncate"), (700, "split")])


@pytest.mark.parametrize("cfg", [
    CefConfig(),
    CefConfig(max_field_length=20),
    CefConfig(fields={"request": "raw.url", "dvchost": ["attributes.none", "attributes.host"],
                      "cnt": "counter", "dpt": "title", "src": "attributes.user"},
              cs=[{"label": "a|b=c\\d\ne", "path": "changes.severity"}],
              cn=[{"label": "risk", "path": "raw.agent"}, {"label": "n", "path": "counter"}]),
], ids=["default", "capped", "custom"])
def test_cef_field_maps_on_the_adversarial_events(cfg: CefConfig) -> None:
    same_output(lambda impl: CefEncoder(cfg, impl), ADVERSARIAL,
                [(700, "truncate"), (700, "split"), (1500, "split")])


ESCAPES = st.one_of(st.sampled_from([HEADER_ESCAPES, VALUE_ESCAPES, LEEF_HEADER_ESCAPES]),
                    delimiters.map(value_escapes))


@settings(max_examples=300, deadline=None)
@given(ESCAPES, texts())
def test_compiled_escaper_is_the_plain_one(pairs: tuple[tuple[str, str], ...], text: str) -> None:
    plain, compiled = PlainEscaper(pairs), Escaper(pairs)
    assert compiled.escape(text) == plain.escape(text)
    # `needs` gates escaping: exact in the plain escaper; the compiled one may say yes to
    # non-ASCII text that needs nothing (a cheaper test), never no to text that needs it.
    assert plain.needs(text) == (plain.escape(text) != text)
    assert compiled.needs(text) or not plain.needs(text)
