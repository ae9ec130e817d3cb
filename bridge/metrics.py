"""Prometheus metrics, defined once so every component increments the same series.

Label values are bounded: source/sink/vendor names from config, fixed outcome words; never
item ids or URLs.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)
_children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}


def child(metric: M, *labels: str) -> M:
    """`metric.labels(*labels)`, looked up once: on the hot path (a count per request, per
    delivered batch) `labels()` validates and locks on every call. Label values are bounded
    (see above), so the cache is too. A child is never removed from its metric here."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found  # type: ignore[return-value]

SWEEPS = Counter("bridge_sweeps_total", "Sweeps by source and outcome", ["source", "outcome"])
SWEEP_SECONDS = Histogram(
    "bridge_sweep_duration_seconds",
    "Wall time of one sweep",
    ["source"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
LAST_SUCCESSFUL_SWEEP = Gauge(
    "bridge_last_successful_sweep_timestamp_seconds",
    "Unix time of the last complete sweep",
    ["source"],
)
ITEMS = Gauge("bridge_items", "Tracked items by source, kind and state", ["source", "kind", "state"])
EVENTS = Counter("bridge_events_total", "Events emitted by type", ["source", "type"])
API_REQUESTS = Counter(
    "bridge_api_requests_total", "Vendor API requests by vendor and status", ["vendor", "status"]
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "bridge_rate_limit_wait_seconds_total",
    "Time spent waiting for the client-side rate limiter",
    ["vendor"],
)
RATE_LIMITED = Counter("bridge_api_429_total", "429 answers from vendors", ["vendor"])
REDIRECTS_REFUSED = Counter(
    "bridge_api_redirects_refused_total",
    "Vendor redirects not followed (another origin, or too many): each fails its sweep",
    ["vendor"],
)
RESPONSES_TOO_LARGE = Counter(
    "bridge_api_responses_too_large_total",
    "Vendor responses cut off at http.max_response_bytes (wire or decompressed)",
    ["vendor"],
)
RESPONSES_REPAIRED = Counter(
    "bridge_api_responses_repaired_total",
    "Vendor responses that were only valid JSON once repaired, by repair",
    ["vendor", "repair"],
)
ITEMS_SKIPPED = Counter(
    "bridge_items_skipped_total",
    "Vendor rows that could not be read as items: skipped, and their sweep left incomplete",
    ["source", "kind"],
)
OUTBOX_DEPTH = Gauge("bridge_outbox_depth", "Pending deliveries per sink", ["sink"])
OUTBOX_OLDEST_AGE = Gauge(
    "bridge_outbox_oldest_age_seconds", "Age of the oldest pending delivery", ["sink"]
)
DELIVERIES = Counter(
    "bridge_deliveries_total", "Delivery attempts by sink and outcome", ["sink", "outcome"]
)
SINK_STATE = Gauge(
    "bridge_sink_state", "1 for the state each sink's destination is in: ok, throttled "
    "(told to wait), unreachable (nothing answers), failing (errors)", ["sink", "state"]
)
SINK_NEXT_ATTEMPT = Gauge(
    "bridge_sink_next_attempt_timestamp_seconds",
    "When a sink in trouble tries again (Unix time; 0 when it is not waiting)", ["sink"]
)
DEAD_LETTERS = Counter("bridge_dead_letters_total", "Events moved to dead letters", ["sink"])
TLS_VERIFY_DISABLED = Gauge(
    "bridge_tls_verify_disabled", "1 when a component runs with TLS verification off", ["component"]
)
DIGESTS = Counter("bridge_digests_total", "Digest messages accepted (several events of one "
                  "group in one message)", ["sink"])
STORM_SUMMARIES = Counter(
    "bridge_storm_summaries_total",
    "Storm-guard summaries accepted: events beyond max_events_per_minute collapsed into one "
    "message", ["sink"])
EVENTS_SUMMARISED = Counter(
    "bridge_events_summarised_total",
    "Events acknowledged as summarised by the storm guard (listed with the dead letters)",
    ["sink"])
STORM_GUARD_ENGAGED = Counter(
    "bridge_storm_guard_engaged_total",
    "Times the storm guard began setting events aside for a summary", ["sink"])
SOURCE_COVERAGE = Gauge(
    "bridge_source_coverage",
    "1 while a source sees what a coverage check watches (an account, a scan type, a threat "
    "category, an API scope), 0 while it is a blind spot", ["source", "scope", "check"])
SWEEPS_PAUSED = Gauge(
    "bridge_sweeps_paused",
    "1 while sweeps wait for delivery: the outbox holds state.max_outbox_events or the "
    "state's disk is under state.min_free_disk_bytes (nothing is dropped)")
