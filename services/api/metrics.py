"""Prometheus metrics of an API process. One registry per app (tests run several apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "rapport_http_request_duration_seconds",
            "Time to answer a request, by route template, method and status.",
            ["route", "method", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "rapport_collected_events",
            "Events posted to the collector, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
