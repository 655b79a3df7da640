"""Profile worker figures: the real ``rapport worker`` (resolve + apply) beside raw aiokafka and a naive Faust agent.

One run against the real local broker and Redis:

1. throughput: simulator lines preloaded into the five raw topics, one worker process from cold;
2. ceiling: a plain aiokafka ``getmany`` loop over the same five topics (no group, no decoding);
3. baseline: ``bench/naive_faust.py`` (one agent, ``orjson.loads`` + two awaited Redis writes per event);
4. freshness: fresh topics, the worker started first, then lines produced at 5,000/s (validated, stamped),
   twice: as live traffic (each event re-timed to the moment it is sent, so event time runs with the wall
   clock) and as the simulation's history (60 days in 48 s: event time ~100,000x the wall clock); the target
   is judged over every event of the live phase, from the worker's own /metrics freshness histogram;
5. memory: ``MEMORY USAGE … SAMPLES 0`` of the profiles the throughput run wrote.

I/O-bound, so single runs (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from aiokafka import TopicPartition
from kafka import KafkaAdminClient

from bench.harness import Figure, Ratio, bench_settings, raw_consume_rate, run_namespace
from profiles.store import ProfileStore
from schemas.topics import CATALOGUE, RAW_EVENT_TOPICS, full_name
from services import worker_metrics
from services.kafka_clients import make_consumer, topic_partitions
from services.producer import produce_lines
from services.redis_client import make_redis
from services.settings import Settings
from services.simulator import Simulation, SimulationConfig
from services.worker_metrics import FRESHNESS_BOUNDS_MS, WorkerTotals
from tests.kafka_support import Topics, produce_raw
from tests.worker_support import CatchUpProbe, Worker

TARGET = 15_000  # events/s per worker process
TARGET_VS_NAIVE = 7.0
TARGET_FRESHNESS_P99_MS = 100.0
TARGET_BYTES_PER_PROFILE = 3072.0
OFFERED_RATE = 5_000  # events/s for the freshness run
FRESHNESS_S = 40
NAIVE_BUDGET_S = 60.0
ROUNDS = 3  # worker and naive runs, interleaved; the medians are reported
STATS_INTERVAL_S = 2
DAYS = 60


def corpus(events: int) -> list[bytes]:
    """All the lines of a simulation sized to at least ``events`` (≈ 2.85 events per customer-day)."""
    customers = max(50, -(-events * 7 // 1000))  # 1,400 customers x 60 days ≈ 240k lines for 200k
    return list(Simulation(SimulationConfig(customers=customers, days=DAYS, seed=1)).lines())


def topics_of(settings: Settings) -> Topics:
    return Topics(settings, {spec.name: full_name(spec, settings.kafka.topic_prefix) for spec in CATALOGUE})


def raw_ends(settings: Settings) -> dict[TopicPartition, int]:
    consumer = make_consumer(settings, "bench-ends")
    try:
        tps = [
            tp
            for spec in RAW_EVENT_TOPICS
            for tp in topic_partitions(consumer, full_name(spec, settings.kafka.topic_prefix))
        ]
        return {TopicPartition(tp.topic, tp.partition): offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


# The worker's log.
def wait_for_log(path: Path, text: str, worker: Worker, timeout_s: float = 120.0) -> float:
    """Monotonic time at which ``text`` was first seen in the log (polled every 50 ms)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return time.monotonic()
        if not worker.alive():
            raise RuntimeError(f"worker exited; log in {path}")
        time.sleep(0.05)
    raise TimeoutError(f"no {text!r} in {path} after {timeout_s} s")


def stats_lines(path: Path, start: int = 0, end: int | None = None) -> list[dict[str, Any]]:
    """The ``stats {json}`` summaries logged between byte offsets ``start`` and ``end`` of the log."""
    data = path.read_bytes()[start:end]
    out = []
    for line in data.splitlines():
        marker = line.find(b" stats {")
        if marker >= 0:
            out.append(orjson.loads(line[marker + len(b" stats ") :]))
    return out


# 1. Throughput.
class Throughput(NamedTuple):
    rate: float  # events / seconds from partition assignment to everything applied
    startup_s: float  # process start to partition assignment
    steady: float  # median applied_per_s of the stats windows between the first and the last busy one
    sustained: float  # applied / seconds over those same windows
    drain_s: float  # assignment to everything applied


def worker_throughput(settings: Settings, namespace: str, logs: Path, lines: int) -> Throughput:
    """How fast one worker catches up on ``lines`` preloaded raw records, from cold."""
    topics = topics_of(settings)
    worker = Worker(topics, namespace, logs, {"RAPPORT_STREAM__STATS_INTERVAL_S": str(STATS_INTERVAL_S)})
    log = logs / "worker-1.log"
    started = time.monotonic()
    worker.start()
    try:
        assigned = wait_for_log(log, "assigned ", worker)
        deadline = assigned + 600
        with CatchUpProbe(topics, namespace) as probe:
            while not probe():
                if time.monotonic() > deadline or not worker.alive():
                    raise RuntimeError(f"worker did not catch up; log in {log}")
                time.sleep(0.1)
            done = time.monotonic()
        time.sleep(STATS_INTERVAL_S + 0.5)  # one more window, so the last busy one is logged
    finally:
        worker.stop()
    busy = [s for s in stats_lines(log) if s["applied"] > 0]
    # The first busy window holds the start-up, the last the drain of events.resolved: neither is sustained.
    middle = busy[1:-1] if len(busy) > 2 else busy
    steady = statistics.median(s["applied_per_s"] for s in middle) if middle else 0.0
    span = sum(s["window_s"] for s in middle)
    sustained = sum(s["applied"] for s in middle) / span if span else 0.0
    return Throughput(lines / (done - assigned), assigned - started, float(steady), sustained, done - assigned)


# 3. Naive baseline.
def committed(admin: KafkaAdminClient, group: str) -> int:
    offsets = admin.list_group_offsets(group).get(group, {})
    return sum(meta.offset for meta in offsets.values() if meta.offset > 0)


def naive_rate(settings: Settings, namespace: str, logs: Path, total: int) -> tuple[float, int, float, float]:
    """(events/s between its first commit and the end or the budget, events in that span, span s, start-up s).

    Progress is the consumer group's committed offsets (committed every second)."""
    env = {
        **topics_of(settings).env,
        "NAIVE_NAMESPACE": namespace,
        "NAIVE_DATADIR": str(logs / "naive-data"),
    }
    group = f"{settings.kafka.topic_prefix}naive-faust-{namespace}"  # as bench/naive_faust.py names it
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    with (logs / "naive.log").open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.naive_faust", "worker", "-l", "warn"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            while (first := committed(admin, group)) == 0:
                if process.poll() is not None or time.monotonic() - started > 120:
                    raise RuntimeError(f"naive Faust app made no progress; log in {logs / 'naive.log'}")
                time.sleep(0.2)
            t1 = time.monotonic()
            last = first
            while last < total and time.monotonic() - t1 < NAIVE_BUDGET_S:
                time.sleep(0.2)
                last = committed(admin, group)
            t2 = time.monotonic()
        finally:
            admin.close()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    return (last - first) / (t2 - t1), last - first, t2 - t1, t1 - started


# 4. Freshness.
def live_stamped(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Each line as if it happened as it is sent: ``received_at`` now, ``timestamp`` as long before it as in
    the simulation (a late event stays late). Lines without both (the malformed ones) pass unchanged."""
    for line in lines:
        try:
            event = orjson.loads(line)
            lag = datetime.fromisoformat(event["received_at"]) - datetime.fromisoformat(event["timestamp"])
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
            yield line
            continue
        now = datetime.now(UTC)
        event["received_at"] = now.isoformat(timespec="milliseconds")
        event["timestamp"] = (now - lag).isoformat(timespec="milliseconds")
        yield orjson.dumps(event)


def freshness(base: Settings, lines: Iterable[bytes], logs: Path, name: str) -> tuple[dict[str, float], float, int]:
    """Worker stats windows while lines arrive at ``OFFERED_RATE``: (figures, offered rate, windows used)."""
    with bench_settings(base) as settings:
        namespace = run_namespace(settings, "fresh")
        log_dir = logs / name
        log_dir.mkdir()
        worker = Worker(
            topics_of(settings), namespace, log_dir, {"RAPPORT_STREAM__STATS_INTERVAL_S": str(STATS_INTERVAL_S)}
        )
        log = log_dir / "worker-1.log"
        worker.start()
        try:
            wait_for_log(log, "assigned ", worker)
            time.sleep(STATS_INTERVAL_S)  # let the worker settle in its idle loop
            start = log.stat().st_size
            summary = produce_lines(itertools.islice(lines, OFFERED_RATE * FRESHNESS_S), settings, rate=OFFERED_RATE)
            end = log.stat().st_size
            time.sleep(1.0)
        finally:
            worker.stop()
        totals = asyncio.run(_published_totals(settings, namespace))
        windows = [s for s in stats_lines(log, start, end) if s["freshness_ms"]["n"] > 0][1:]
        if not windows:
            raise RuntimeError(f"no stats windows while producing; log in {log}")
        figures = {
            "p50": statistics.median(s["freshness_ms"]["p50"] for s in windows),
            "p99": max(s["freshness_ms"]["p99"] for s in windows),
            "p99 median": statistics.median(s["freshness_ms"]["p99"] for s in windows),
            "max": max(s["freshness_ms"]["max"] for s in windows),
            "applied/s": statistics.median(s["applied_per_s"] for s in windows),
            # Over every event the worker applied while the lines arrived, warm-up included: the worker's
            # /metrics histogram (published to Redis; its last figures at the graceful stop).
            "events": sum(totals.freshness),
            "p99 all": quantile_bound(totals.freshness, 0.99),
            "within target": within(totals.freshness, TARGET_FRESHNESS_P99_MS),
        }
        return figures, summary.rate, len(windows)


async def _published_totals(settings: Settings, namespace: str) -> WorkerTotals:
    redis = make_redis(settings)
    try:
        return await worker_metrics.read(redis, namespace)
    finally:
        await redis.aclose()


def quantile_bound(buckets: list[int], q: float) -> float:
    """The smallest histogram bound (ms) at or below which at least ``q`` of the samples are: the ``q``
    quantile is at most this (infinite when it lies in the last, unbounded bucket).

    >>> quantile_bound([90, 9, 1] + [0] * 10, 0.99)  # 90 within 5 ms, 9 more within 10, 1 within 25
    10.0
    >>> quantile_bound([0] * 12 + [1], 0.5)
    inf
    """
    needed = q * sum(buckets)
    seen = 0
    for bound, count in zip((*FRESHNESS_BOUNDS_MS, math.inf), buckets, strict=True):
        seen += count
        if seen >= needed:
            return float(bound)
    return math.inf


def within(buckets: list[int], bound_ms: float) -> float:
    """The share of samples at or below ``bound_ms``, which must be one of the histogram's bounds.

    >>> within([90, 9, 1] + [0] * 10, 10)
    0.99
    """
    last = FRESHNESS_BOUNDS_MS.index(int(bound_ms))
    return sum(buckets[: last + 1]) / sum(buckets)


# 5. Memory.
def key_kind(key: bytes, namespace: str) -> str:
    """A key's kind: its name with the hash-tagged id and a trailing partition number left out.

    >>> key_kind(b"rapport:n1:ml:t:{c-001}", "n1"), key_kind(b"rapport:n1:pp:3", "n1")
    ('ml:t', 'pp')
    """
    kind = key.decode().removeprefix(f"rapport:{namespace}:")
    return re.sub(r"(:\{.*|:\d+)$", "", kind)


async def _memory(settings: Settings, namespace: str) -> tuple[list[int], int, int, Counter[str]]:
    """(bytes of each live profile key, bytes of every key of the namespace, live profiles, bytes by kind)."""
    redis = make_redis(settings)
    try:
        store = ProfileStore(redis, namespace)
        keys = [key async for key in redis.scan_iter(match=f"rapport:{namespace}:*", count=1000)]
        pipe = redis.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        sizes = dict(zip(keys, await pipe.execute(), strict=True))
        marker = b":p:{"
        ids = [key.split(marker, 1)[1][:-1].decode() for key in keys if marker in key]
        loaded = await store.load(ids)
        live = [
            sizes[store.profile_key(pid).encode()]
            for pid, stored in loaded.items()
            if stored.state is not None and stored.state.merged_into is None
        ]
        kinds: Counter[str] = Counter()
        for key, size in sizes.items():
            kinds[key_kind(key, namespace)] += size or 0
        return live, sum(s or 0 for s in sizes.values()), len(live), kinds
    finally:
        await redis.aclose()


def rounded(rates: Iterable[float]) -> str:
    """Each round's rate, in order."""
    return ", ".join(f"{r:,.0f}" for r in rates)


def naive_span(naives: list[tuple[float, int, float, float]]) -> str:
    spans = sorted(n[2] for n in naives)
    return f"{spans[0]:.0f} s" if spans[0] == spans[-1] else f"{spans[0]:.0f}-{spans[-1]:.0f} s"


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def run(base: Settings, events: int, rounds: int = ROUNDS) -> tuple[list[Figure], list[Ratio]]:
    """The worker's throughput and the naive agent's rate are measured ``rounds`` times, interleaved (worker,
    naive, worker, naive …), each round on topics of its own (a worker's apply stage reads all of
    ``events.resolved``, including what earlier rounds' workers sent), and their medians reported: on
    this VM one process's rate moves by a third between runs minutes apart, so a single pair is a coin
    toss."""
    lines = corpus(events)
    logs = Path(tempfile.mkdtemp(prefix="bench-profile-worker-"))  # kept when a step fails, for post-mortems
    throughputs: list[Throughput] = []
    naives: list[tuple[float, int, float, float]] = []
    with bench_settings(base):  # the stack stays up across the rounds
        for i in range(rounds):
            with bench_settings(base) as settings:
                produce_raw(topics_of(settings), lines)
                if i == 0:
                    ends = raw_ends(settings)
                    total = sum(ends.values())
                    raw = raw_consume_rate(settings, ends)
                namespace = run_namespace(settings, "worker")
                round_logs = logs / f"round{i}"
                round_logs.mkdir()
                throughputs.append(worker_throughput(settings, namespace, round_logs, total))
                if i == 0:
                    live, all_bytes, live_count, kinds = asyncio.run(_memory(settings, namespace))
                naives.append(naive_rate(settings, namespace, round_logs, total))
        lives = [freshness(base, live_stamped(lines), logs, f"fresh-live{i}") for i in range(rounds)]
        # The round with the median share of events within the target stands for all (its figures belong
        # together); every round's share is printed beside it.
        live_fresh, offered, windows = sorted(lives, key=lambda run: run[0]["within target"])[len(lives) // 2]
        fresh, history_offered, history_windows = freshness(base, lines, logs, "fresh-history")
    shutil.rmtree(logs)
    throughput = Throughput(*(statistics.median(field) for field in zip(*throughputs, strict=True)))
    naive = statistics.median(n[0] for n in naives)
    naive_startup = statistics.median(n[3] for n in naives)
    partitions = f"{len(ends)} partitions over 5 raw topics"
    shares = ", ".join(f"{run[0]['within target']:.2%}" for run in lives)
    naive_scope = f"{statistics.median(n[1] for n in naives):,.0f} of {total:,} events over {naive_span(naives)}"
    of_rounds = f"median of {rounds} rounds"
    figures = [
        Figure("raw aiokafka getmany", raw, "events/s", f"{total:,} simulator lines, {partitions}, no processing"),
        Figure(
            "profile worker",
            throughput.rate,
            "events/s",
            f"{of_rounds} ({rounded(t.rate for t in throughputs)}); {total:,} lines / {throughput.drain_s:.1f} s "
            "from 'assigned' log line to caught_up (raw offsets committed and events.resolved applied; polled every "
            f"0.1 s); {throughput.startup_s:.1f} s start-up excluded",
        ),
        Figure(
            "profile worker, sustained",
            throughput.sustained,
            "applied/s",
            f"{of_rounds} ({rounded(t.sustained for t in throughputs)}); applied / time over the {STATS_INTERVAL_S} s "
            "stats windows between the first busy one (start-up) and the last (drain); their median "
            f"{throughput.steady:,.0f}/s",
        ),
        Figure(
            "naive Faust agent",
            naive,
            "events/s",
            f"{of_rounds} ({rounded(n[0] for n in naives)}); {naive_scope} (budget {NAIVE_BUDGET_S:.0f} s), "
            "committed-offset delta from its first commit; "
            f"{naive_startup:.1f} s start-up excluded; loads + 2 awaited Redis writes/event",
        ),
        Figure("target: profile worker", TARGET, "events/s", "per process"),
        Figure(
            "freshness p99, all events",
            live_fresh["p99 all"],
            "ms",
            f"live traffic at {offered:,.0f} events/s offered (validated producer), raw Kafka timestamp -> profile "
            f"written; a bound of the worker's /metrics histogram: {live_fresh['within target']:.2%} of "
            f"{live_fresh['events']:,.0f} events within {TARGET_FRESHNESS_P99_MS:.0f} ms (warm-up included); "
            f"the median of {rounds} rounds by that share ({shares})",
        ),
        Figure(
            "freshness p99 (worst window)",
            live_fresh["p99"],
            "ms",
            f"the highest p99 of {windows} windows of {STATS_INTERVAL_S} s (the first one left out); "
            f"median window p99 {live_fresh['p99 median']:.0f} ms",
        ),
        Figure("freshness p50 (median window)", live_fresh["p50"], "ms", f"max {live_fresh['max']:.0f} ms"),
        Figure("freshness: worker applied", live_fresh["applied/s"], "applied/s", "median window while paced"),
        Figure(
            "history at 5k/s: freshness p99",
            fresh["p99"],
            "ms",
            f"the simulation's 60 days played at {history_offered:,.0f} events/s, worst of {history_windows} windows;"
            f" median window p99 {fresh['p99 median']:.0f} ms, p50 {fresh['p50']:.0f} ms; all events: p99 <= "
            f"{fresh['p99 all']:.0f} ms, {fresh['within target']:.2%} within {TARGET_FRESHNESS_P99_MS:.0f} ms",
        ),
        Figure("target: freshness p99", TARGET_FRESHNESS_P99_MS, "ms", "at 5,000 events/s"),
        Figure(
            "profile key, mean",
            statistics.fmean(live),
            "bytes",
            f"MEMORY USAGE SAMPLES 0 of all {live_count:,} live profiles; "
            f"p50 {percentile(live, 0.5):,.0f}, p90 {percentile(live, 0.9):,.0f}, max {max(live):,}",
        ),
        Figure(
            "namespace / live profile",
            all_bytes / live_count,
            "bytes",
            "every key of the namespace (merged tombstones, aliases, emails, RFM, positions) / live profiles; "
            + ", ".join(f"{kind} {size / all_bytes:.0%}" for kind, size in kinds.most_common(5)),
        ),
        Figure("target: memory", TARGET_BYTES_PER_PROFILE, "bytes", "per active profile"),
    ]
    ratios = [
        # Both sides sustained: the naive agent's rate also leaves out its start-up, and it never drains.
        Ratio(
            "profile worker, sustained / naive Faust",
            "profile worker, sustained",
            "naive Faust agent",
            target=TARGET_VS_NAIVE,
        ),
        Ratio("profile worker, from assignment / naive Faust", "profile worker", "naive Faust agent"),
        Ratio("profile worker / target", "profile worker", "target: profile worker", target=1.0),
        Ratio("profile worker / raw getmany", "profile worker", "raw aiokafka getmany"),
        # p99 is a quantile over events; the worst window's p99 (a quantile of the tail's tail) is shown beside.
        Ratio("freshness target / p99", "target: freshness p99", "freshness p99, all events", target=1.0),
        Ratio("freshness target / worst window's p99", "target: freshness p99", "freshness p99 (worst window)"),
        Ratio("memory target / profile key", "target: memory", "profile key, mean", target=1.0),
        Ratio("memory target / namespace per profile", "target: memory", "namespace / live profile", target=1.0),
    ]
    return figures, ratios
