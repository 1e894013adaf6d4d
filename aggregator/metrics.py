"""Prometheus metrics, defined once per process.

Counters and the fetch histogram are updated as polls and requests happen. The per-source
and per-topic gauges describe what the store holds, so they are read from the store when
``/metrics`` is scraped (:func:`update_from_store`): they are right after a restart and on a
web-only process, and a source removed from the config disappears from them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram

from aggregator.types import SourceState

POLLS = Counter("aggregator_polls_total", "Polls by source and outcome", ["source", "outcome"])
FETCH_SECONDS = Histogram(
    "aggregator_fetch_duration_seconds",
    "Time to fetch, parse and normalize one source",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60),
)
ITEMS = Counter("aggregator_items_total", "Items ingested by kind", ["kind"])
CONSECUTIVE_FAILURES = Gauge(
    "aggregator_source_consecutive_failures", "Consecutive failed polls", ["source"]
)
LAST_SUCCESS = Gauge(
    "aggregator_source_last_success_timestamp_seconds",
    "Unix time of the last successful poll",
    ["source"],
)
SCHEDULER_LAG = Gauge(
    "aggregator_scheduler_lag_seconds", "How late the most overdue source of the last round was"
)
TOPIC_STORIES = Gauge("aggregator_topic_stories", "Stories in each topic", ["topic"])
HTTP_REQUESTS = Counter(
    "aggregator_http_requests_total", "HTTP requests by route and status", ["route", "status"]
)
CONFIG_RELOAD_FAILED = Gauge(
    "aggregator_config_reload_failed",
    "1 while the last config reload failed and the previous config is still in force",
)

_lock = threading.Lock()
_known_sources: set[str] = set()
_known_topics: set[str] = set()


def update_from_store(states: Iterable[SourceState], topic_counts: Mapping[str, int]) -> None:
    """Set the per-source and per-topic gauges; drop the labels of sources and topics gone."""
    global _known_sources, _known_topics
    with _lock:
        sources: set[str] = set()
        for s in states:
            sources.add(s.id)
            CONSECUTIVE_FAILURES.labels(s.id).set(s.consecutive_errors)
            if s.last_success_at is not None:
                LAST_SUCCESS.labels(s.id).set(s.last_success_at.timestamp())
        for gone in _known_sources - sources:
            for gauge in (CONSECUTIVE_FAILURES, LAST_SUCCESS):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        for topic_id, count in topic_counts.items():
            TOPIC_STORIES.labels(topic_id).set(count)
        for gone in _known_topics - set(topic_counts):
            with contextlib.suppress(KeyError):
                TOPIC_STORIES.remove(gone)
        _known_sources, _known_topics = sources, set(topic_counts)
