"""Stream runtime figures: a counting worker process (one Redis Lua write per batch) beside raw aiokafka.

Both read the same preloaded topic of the real local broker; the worker writes to the real local Redis.
I/O-bound, so single runs (see docs/benchmarks.md).
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from bench.harness import Figure, Ratio, bench_settings
from schemas.topics import CLICKS, full_name
from services.settings import Settings
from tests.streams_support.counting_worker import CountingKeys
from tests.streams_support.runs import CountingStore, Run, keyed_load, produce, raw_consume_rate

TARGET = 15_000  # events/s per worker process


def run(base: Settings, events: int) -> tuple[list[Figure], list[Ratio]]:
    keys = keyed_load(events)
    with bench_settings(base) as settings, tempfile.TemporaryDirectory() as logs:
        topic = full_name(CLICKS, settings.kafka.topic_prefix)
        ends = produce(settings, topic, keys)
        raw = raw_consume_rate(settings, topic, ends)
        tag = uuid.uuid4().hex[:8]
        worker_run = Run(
            settings, topic, f"bench-{tag}", CountingStore(settings.redis.url, CountingKeys(tag)), Path(logs)
        )
        try:
            startup_s, worker = worker_run.timed_worker(ends)
        finally:
            worker_run.close()
    partitions = f"{len(ends)} partitions, 1,000 keys"
    figures = [
        Figure("raw aiokafka getmany", raw, "events/s", f"{events:,} records, {partitions}, no processing"),
        Figure(
            "stream worker",
            worker,
            "events/s",
            f"counting handler, one Lua write per batch, from first batch; {startup_s:.1f} s start-up",
        ),
        Figure("target: stream worker", TARGET, "events/s", "per process"),
    ]
    ratios = [
        Ratio("stream worker / raw getmany", "stream worker", "raw aiokafka getmany"),
        Ratio("stream worker / target", "stream worker", "target: stream worker", target=1.0),
    ]
    return figures, ratios
