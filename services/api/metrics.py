"""Prometheus metrics of an API process. One registry per app (tests run several apps in one process)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from profiles.models.scoring import ServedModel
from services.api.worker_view import WorkerSnapshot
from services.worker_metrics import FRESHNESS_BOUNDS_MS

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
        self.hot_reads = Counter(
            "rapport_http_hot_reads",
            "Requests answered beneath the routes by the hot read path (services/api/hot_reads.py), by route.",
            ["route"],
            registry=self.registry,
        )
        self.events = Counter(
            "rapport_collected_events",
            "Events posted to the collector, by outcome.",
            ["outcome"],
            registry=self.registry,
        )


class WorkerCollector(Collector):
    """The workers' figures as of one snapshot (``services/api/worker_view.py``), in Prometheus families."""

    def __init__(self, snapshot: WorkerSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        totals = self.snapshot.totals
        events = CounterMetricFamily(
            "rapport_worker_events",
            "Events handled by the profile workers, by outcome (dead_lettered: rate() is the DLQ rate).",
            labels=["outcome"],
        )
        for outcome, count in totals.events.items():
            events.add_metric([outcome], count)
        yield events
        cumulative, buckets = 0, []
        for bound, count in zip((*FRESHNESS_BOUNDS_MS, None), totals.freshness, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound is None else str(bound / 1000), cumulative))
        yield HistogramMetricFamily(
            "rapport_event_freshness_seconds",
            "From an event's arrival in Kafka to the profile write that includes it.",
            buckets=buckets,
            sum_value=totals.freshness_sum_ms / 1000,
        )
        if self.snapshot.lag_known:
            lag = GaugeMetricFamily(
                "rapport_consumer_lag", "Records not yet processed, per partition.", labels=["topic", "partition"]
            )
            for (topic, partition), behind in sorted(self.snapshot.lag.items()):
                lag.add_metric([topic, str(partition)], behind)
            yield lag


class ModelCollector(Collector):
    """The models this process serves (``services.model_cache``): version, examples learned, cold start, drift
    events, and the trainer's rolling metrics beside its baselines' (as of the served snapshot)."""

    def __init__(self, models: dict[str, ServedModel]) -> None:
        self.models = models

    def collect(self) -> Iterator[GaugeMetricFamily]:
        version = GaugeMetricFamily("rapport_model_version", "The model version served.", labels=["model"])
        seen = GaugeMetricFamily(
            "rapport_model_examples_seen", "Labelled examples the served version learned.", labels=["model"]
        )
        cold = GaugeMetricFamily(
            "rapport_model_cold_start", "1 while scores come from the cold-start heuristic.", labels=["model"]
        )
        drifts = GaugeMetricFamily(
            "rapport_model_drifts_detected", "Drifts of the loss the trainer detected (ADWIN).", labels=["model"]
        )
        quality = GaugeMetricFamily(
            "rapport_model_metric",
            "Rolling progressive-validation metric over the last examples, for the model and each baseline.",
            labels=["model", "predictor", "metric"],
        )
        for name, served in sorted(self.models.items()):
            trainer = served.trainer
            version.add_metric([name], served.version)
            seen.add_metric([name], trainer.examples_seen)
            cold.add_metric([name], float(trainer.cold_start))
            drifts.add_metric([name], trainer.drifts_detected)
            for key, value in sorted(trainer.report().items()):
                if value is not None:
                    predictor, _, metric = key.rpartition(".")
                    quality.add_metric([name, predictor or "model", metric], value)
        yield from (version, seen, cold, drifts, quality)
