"""The interpreter settings a sweep needs (bridge/runtime.py) are set by the first sweep and
never undo a setting an operator made stricter."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from bridge import runtime


@pytest.fixture
def restored() -> Iterator[None]:
    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored")
def test_tuning_shortens_the_switch_interval_and_relaxes_the_collector() -> None:
    sys.setswitchinterval(0.005)
    gc.set_threshold(700, 10, 10)
    runtime.tune_for_sweeps()
    assert sys.getswitchinterval() == pytest.approx(runtime.SWITCH_INTERVAL)
    assert gc.get_threshold() == (runtime.GC_YOUNG_THRESHOLD, 10, 10)


@pytest.mark.usefixtures("restored")
def test_tuning_keeps_shorter_settings() -> None:
    sys.setswitchinterval(0.0001)
    relaxed = runtime.GC_YOUNG_THRESHOLD + 1  # an operator's own, laxer still
    gc.set_threshold(relaxed, 5, 5)
    runtime.tune_for_sweeps()
    assert sys.getswitchinterval() == pytest.approx(0.0001)
    assert gc.get_threshold() == (relaxed, 5, 5)
