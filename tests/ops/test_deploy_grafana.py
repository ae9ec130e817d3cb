"""deploy/grafana/bridge-dashboard.json only queries series that bridge/metrics.py defines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from bridge import metrics

from ._support import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "bridge-dashboard.json"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}
# The series the issue asks the dashboard to show (families, as prometheus-client names them).
REQUIRED = {
    "bridge_sweeps", "bridge_sweep_duration_seconds", "bridge_items", "bridge_events",
    "bridge_api_requests", "bridge_rate_limit_wait_seconds", "bridge_api_429",
    "bridge_outbox_depth", "bridge_outbox_oldest_age_seconds", "bridge_deliveries",
    "bridge_dead_letters", "bridge_last_successful_sweep_timestamp_seconds",
}


def defined_series() -> dict[str, str]:
    """Sample name -> family name, for every metric defined in bridge.metrics."""
    out: dict[str, str] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                for suffix in SUFFIXES[family.type]:
                    out[family.name + suffix] = family.name
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def test_queries_use_only_defined_metrics(dashboard: dict[str, Any]) -> None:
    series = defined_series()
    used: set[str] = set()
    for expr in queries(dashboard):
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        names = re.findall(r"\bbridge_[a-zA-Z0-9_]+", expr)
        assert names, f"query without a bridge metric: {expr}"
        for name in names:
            assert name in series, f"{name} is not defined in bridge/metrics.py ({expr})"
            used.add(series[name])
    assert set(series.values()) >= REQUIRED, "a metric the dashboard needs left bridge/metrics.py"
    assert used >= REQUIRED, f"not on the dashboard: {sorted(REQUIRED - used)}"


def test_no_item_level_labels(dashboard: dict[str, Any]) -> None:
    for expr in queries(dashboard):
        assert not re.search(r"\b(key|item|id|url)\s*[=!~]", expr), expr


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "source", "sink"} <= names
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
