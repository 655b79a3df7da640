"""Worker figures shared through Redis, so that any API process can expose them on ``/metrics``.

Workers add their counts since the last publication to one hash per namespace (``HINCRBY``: several
workers add up); the API reads the hash at scrape time. Counters only ever grow, so Prometheus' ``rate()``
gives the dead-letter rate and throughput, and the freshness histogram is cumulative like a native one.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Final

from redis.asyncio import Redis

#: Upper bounds (ms) of the event → profile freshness histogram's buckets; the last bucket is +Inf.
FRESHNESS_BOUNDS_MS: Final = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000)
#: Events by what the worker did with them.
OUTCOMES: Final = ("resolved", "applied", "dead_lettered", "erased_refused")


def metrics_key(namespace: str) -> str:
    return f"rapport:{namespace}:metrics"


@dataclass
class WorkerTotals:
    """Counts to add (a worker's since its last publication) or read (every worker's since the start)."""

    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    #: Per bucket (not cumulative), the last one for samples above every bound.
    freshness: list[int] = field(default_factory=lambda: [0] * (len(FRESHNESS_BOUNDS_MS) + 1))
    freshness_sum_ms: int = 0

    def observe_freshness(self, samples_ms: list[int]) -> None:
        for sample in samples_ms:
            self.freshness[bisect.bisect_left(FRESHNESS_BOUNDS_MS, sample)] += 1
        self.freshness_sum_ms += sum(samples_ms)

    def empty(self) -> bool:
        return not any(self.events.values()) and not any(self.freshness)

    def add(self, other: WorkerTotals) -> None:
        for outcome, count in other.events.items():
            self.events[outcome] += count
        self.freshness = [a + b for a, b in zip(self.freshness, other.freshness, strict=True)]
        self.freshness_sum_ms += other.freshness_sum_ms


async def publish(redis: Redis, namespace: str, totals: WorkerTotals) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        key = metrics_key(namespace)
        for outcome, count in totals.events.items():
            if count:
                pipe.hincrby(key, f"events:{outcome}", count)
        for bucket, count in enumerate(totals.freshness):
            if count:
                pipe.hincrby(key, f"freshness:{bucket}", count)
        if totals.freshness_sum_ms:
            pipe.hincrby(key, "freshness:sum_ms", totals.freshness_sum_ms)
        await pipe.execute()


async def read(redis: Redis, namespace: str) -> WorkerTotals:
    raw = {_text(k): int(v) for k, v in (await redis.hgetall(metrics_key(namespace))).items()}
    totals = WorkerTotals()
    for outcome in OUTCOMES:
        totals.events[outcome] = raw.get(f"events:{outcome}", 0)
    totals.freshness = [raw.get(f"freshness:{b}", 0) for b in range(len(FRESHNESS_BOUNDS_MS) + 1)]
    totals.freshness_sum_ms = raw.get("freshness:sum_ms", 0)
    return totals


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
