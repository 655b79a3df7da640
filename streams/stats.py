"""What a worker has done lately: throughput, dead letters, and event→profile freshness.

Freshness is measured per applied event, from the raw record's Kafka timestamp (when a producer handed it
to Rapport) to the moment the profile write that includes it returned. The worker logs a summary line
every ``stream.stats_interval_s`` (``stats {json}``), which operators can read and benchmarks parse.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.worker_metrics import WorkerTotals

log = logging.getLogger(__name__)

_SAMPLES = 200_000


@dataclass
class WorkerStats:
    interval_s: float
    resolved: int = 0
    applied: int = 0
    dead_lettered: int = 0
    erased_refused: int = 0  # events of erased customers, dropped on purpose
    batches: int = 0
    busy_s: float = 0.0  # time spent inside the handler: the rest of the window is waiting for records
    longest_batch_s: float = 0.0  # a stall inside the handler shows here, one outside it does not
    freshness_ms: deque[int] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    #: Counts not yet published for /metrics (``take_unpublished``).
    unpublished: WorkerTotals = field(default_factory=WorkerTotals)
    _since: float = field(default_factory=time.monotonic)

    def observe_batch(self, seconds: float) -> None:
        self.batches += 1
        self.busy_s += seconds
        self.longest_batch_s = max(self.longest_batch_s, seconds)

    def observe_freshness(self, ingested: list[int], visible_ms: int) -> None:
        samples = [visible_ms - at for at in ingested]
        self.freshness_ms.extend(samples)
        self.unpublished.observe_freshness(samples)

    def count(self, outcome: str, events: int) -> None:
        """Add to a window counter (``resolved``, ``applied``, …) and to the unpublished totals."""
        setattr(self, outcome, getattr(self, outcome) + events)
        self.unpublished.events[outcome] += events

    def take_unpublished(self) -> WorkerTotals:
        taken, self.unpublished = self.unpublished, WorkerTotals()
        return taken

    def maybe_log(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._since >= self.interval_s:
            self.log_and_reset(now)

    def log_and_reset(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        log.info("stats %s", orjson.dumps(self.summary(now - self._since)).decode())
        self.resolved = self.applied = self.dead_lettered = self.erased_refused = self.batches = 0
        self.busy_s = self.longest_batch_s = 0.0
        self.freshness_ms.clear()
        self._since = now

    def summary(self, window_s: float) -> dict[str, Any]:
        samples = sorted(self.freshness_ms)

        def pct(q: float) -> int | None:
            return samples[min(len(samples) - 1, int(q * len(samples)))] if samples else None

        return {
            "window_s": round(window_s, 3),
            "batches": self.batches,
            "busy": round(self.busy_s / window_s, 3) if window_s > 0 else None,
            "longest_batch_ms": round(self.longest_batch_s * 1000, 1),
            "resolved": self.resolved,
            "applied": self.applied,
            "dead_lettered": self.dead_lettered,
            "erased_refused": self.erased_refused,
            "applied_per_s": round(self.applied / window_s, 1) if window_s > 0 else None,
            "freshness_ms": {
                "n": len(samples),
                "p50": pct(0.5),
                "p99": pct(0.99),
                "max": samples[-1] if samples else None,
            },
        }
