"""Segment timers under load: how long after a window boundary the exits of many quiet customers reach Kafka.

One run against the real local broker and Redis: ``active_7d`` (``windows["7d"].clicks >= 1``) defined;
``CUSTOMERS`` customers each click once in the same hour, so that all of them leave the segment at the same
instant, 168 hours later — the worst case for a timer-driven exit (every timer is due at once). The worker's
clock is moved (``stream.clock_offset_s``) so that this instant comes 30 s after the clicks are applied;
then nothing but time passes. For each exit: the moment it was read from ``segments.changes`` minus the
boundary, on the worker's clock.

Baseline in the same run: the same customers' *entries*, caused by their click (event → entered change
read from Kafka), i.e. what an event-driven change costs on this machine.

Measured twice: with only time passing, and under event load — ``LOAD_RATE`` clicks/s of other customers,
timestamped on the worker's clock, produced from the clicks until the last exit is read, so that the timers
fire while the worker is folding events (their own entries are not counted).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson

from bench.harness import Figure, Ratio, bench_settings, run_namespace
from bench.profile_worker import topics_of, wait_for_log
from profiles.config import HOUR_MS
from profiles.segment_store import SegmentStore
from profiles.timeutil import bucket_of
from services.kafka_clients import make_consumer
from services.producer import produce_lines
from services.redis_client import make_redis
from services.settings import Settings
from tests.kafka_support import produce_raw
from tests.worker_support import Worker

CUSTOMERS = 3_000
LEAD_S = 30.0
TARGET_P99_S = 2.0
LOAD_RATE = 2_000
LOAD_CUSTOMERS = 5_000


def run(base: Settings) -> tuple[list[Figure], list[Ratio]]:
    quiet = _measure(base, load_rate=0)
    loaded = _measure(base, load_rate=LOAD_RATE)
    figures, ratios = _figures(*quiet, label="")
    more, more_ratios = _figures(*loaded, label=f" under {LOAD_RATE:,} events/s")
    return figures + [f for f in more if not f.name.startswith("target")], ratios + more_ratios


def _measure(base: Settings, *, load_rate: int) -> tuple[list[float], list[float]]:
    """(entry delays, exit delays) in ms, with ``load_rate`` clicks/s of other customers meanwhile."""
    with bench_settings(base) as settings, TemporaryDirectory() as logs:
        topics = topics_of(settings)
        namespace = run_namespace(settings, "seg")
        asyncio.run(_define(settings, namespace))
        hour = int(time.time() * 1000) // HOUR_MS - 300
        click_ms = hour * HOUR_MS + 1_800_000
        boundary_ms = (bucket_of(click_ms) + 7 * 24 - 1) * HOUR_MS + 1
        offset_s = (boundary_ms - LEAD_S * 1000 - time.time() * 1000) / 1000
        worker = Worker(topics, namespace, Path(logs), {"RAPPORT_STREAM__CLOCK_OFFSET_S": str(offset_s)})
        consumer = make_consumer(settings, "bench-segments", auto_offset_reset="earliest")
        consumer.subscribe([topics.names["segments.changes"]])
        stop = threading.Event()
        load = threading.Thread(
            target=produce_lines, args=(_background(offset_s, stop), settings), kwargs={"rate": load_rate}
        )
        worker.start()
        try:
            wait_for_log(Path(logs) / "worker-1.log", "Resuming from", worker)  # assigned and positioned
            clicks = [_click(i, click_ms + i) for i in range(CUSTOMERS)]
            produced_ms = time.time() * 1000
            produce_raw(topics, clicks)
            if load_rate:
                load.start()
            entered: list[float] = []
            exited: list[float] = []
            deadline = time.monotonic() + LEAD_S + 120
            while len(exited) < CUSTOMERS and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=100, max_records=10_000).values():
                    seen_ms = time.time() * 1000
                    for record in records:
                        change = orjson.loads(record.value)
                        if change["customer_id"].startswith("bg-"):
                            continue  # the background load's own entries
                        if change["change"] == "entered":
                            entered.append(seen_ms - produced_ms)
                        else:
                            exited.append(seen_ms + offset_s * 1000 - boundary_ms)
        finally:
            stop.set()
            if load.is_alive():
                load.join()
            consumer.close()
            worker.stop()
    if len(exited) < CUSTOMERS or len(entered) < CUSTOMERS:
        raise RuntimeError(f"{len(entered)} entries and {len(exited)} exits of {CUSTOMERS} customers")
    return entered, exited


def _background(offset_s: float, stop: threading.Event) -> Iterator[bytes]:
    """Clicks of ``LOAD_CUSTOMERS`` other customers, timestamped now on the worker's clock, until ``stop``."""
    i = 0
    while not stop.is_set():
        yield _click(i % LOAD_CUSTOMERS, int((time.time() + offset_s) * 1000), prefix="bg", event=f"bg-{i}")
        i += 1


def _figures(entered: list[float], exited: list[float], *, label: str) -> tuple[list[Figure], list[Ratio]]:
    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    figures = [
        Figure(f"exit delay p50{label}", p(exited, 0.5), "s", f"{CUSTOMERS:,} customers leaving at one boundary"),
        Figure(f"exit delay p99{label}", p(exited, 0.99), "s", f"max {max(exited) / 1000:.2f} s, after the boundary"),
        Figure("target: exit delay p99", TARGET_P99_S, "s", "issue 5: at most"),
        Figure(
            f"baseline: entry delay p99{label}",
            p(entered, 0.99),
            "s",
            f"from producing the clicks to reading 'entered'; p50 {statistics.median(entered) / 1000:.2f} s",
        ),
    ]
    ratios = [
        Ratio(f"target / exit delay p99{label} (>= 1 is met)", "target: exit delay p99", f"exit delay p99{label}", 1.0),
        Ratio(f"exit p99 / entry p99{label}", f"exit delay p99{label}", f"baseline: entry delay p99{label}"),
    ]
    return figures, ratios


async def _define(settings: Settings, namespace: str) -> None:
    redis = make_redis(settings)
    try:
        await SegmentStore(redis, namespace).save("active_7d", "", 'windows["7d"].clicks >= 1', now_ms=0)
    finally:
        await redis.aclose()


def _click(i: int, at_ms: int, *, prefix: str = "c", event: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "event_id": event or f"bench-{i}",
            "type": "click",
            "customer_id": f"{prefix}-{i:06d}",
            "source": "web",
            "timestamp": datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(),
            "session_id": f"s-{i}",
            "action": "page_view",
            "url": "https://shop.example/",
        }
    )
