"""Prometheus metrics, defined once per process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "aggregator_scheduler_lag_seconds", "How late the last due poll round started"
)
TOPIC_STORIES = Gauge("aggregator_topic_stories", "Stories in each topic", ["topic"])
HTTP_REQUESTS = Counter(
    "aggregator_http_requests_total", "HTTP requests by route and status", ["route", "status"]
)
