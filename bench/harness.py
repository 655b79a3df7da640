"""What every benchmark shares: a real stack and private topics, timing, and the printed report."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from deploy.localstack import LocalStack, Outcome
from profiles.config import FoldConfig
from profiles.identity import Arrival
from profiles.namespaces import Namespaces, unlink_matching
from profiles.offline import OfflineFolder
from profiles.state import ProfileState
from schemas.resolved import RawSource
from schemas.topics import CATALOGUE, full_name
from schemas.validation import Rejection, ValidationLimits, validate_event
from services.redis_client import make_redis
from services.settings import Settings
from services.topics_admin import admin_client, ensure_topics

T = TypeVar("T")


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    note: str = ""


@dataclass(frozen=True)
class Ratio:
    name: str
    numerator: str
    denominator: str
    target: float | None = None


@contextmanager
def bench_settings(base: Settings) -> Iterator[Settings]:
    """The configured stack (started if it is not running, and then stopped) with topics of this run alone.
    On the way out the run's topics are deleted and so are its namespaces (those named by ``run_namespace``):
    left behind, a day of runs filled the stack's Redis with ~270,000 keys (438 MB)."""
    stack = LocalStack(base)
    outcomes = stack.up()
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update={"topic_prefix": prefix})})
    ensure_topics(settings)
    try:
        yield settings
    finally:
        with admin_client(settings) as admin:
            admin.delete_topics([full_name(spec, prefix) for spec in CATALOGUE])
        try:
            asyncio.run(_drop_namespaces(settings))
        except RedisError as exc:  # not worth hiding why the run failed, if it did
            Console(stderr=True).print(f"could not drop this run's namespaces: {exc!r}")
        for node in stack.nodes:
            if outcomes[node.name] is Outcome.STARTED:
                node.stop()


def run_namespace(settings: Settings, tag: str) -> str:
    """A namespace of this bench run (``bench_settings`` drops it at the end), unique within the run."""
    return f"{_run_id(settings)}-{tag}-{uuid.uuid4().hex[:6]}"


def _run_id(settings: Settings) -> str:
    return settings.kafka.topic_prefix.rstrip(".")


async def _drop_namespaces(settings: Settings) -> None:
    redis = make_redis(settings)
    try:
        run = _run_id(settings)
        names = {key.split(b":")[1].decode() async for key in redis.scan_iter(match=f"rapport:{run}-*", count=1000)}
        namespaces = Namespaces(redis)
        for name in sorted(names):
            async for _ in namespaces.drop(settings.profile.namespace, name):
                pass
        # The naive agent's counters (bench/naive_faust.py) live outside the namespace layout.
        async for _ in unlink_matching(redis, f"naive:{run}-*", 1000):
            pass
    finally:
        await redis.aclose()


def rate(count: int, fn: Callable[[], object]) -> float:
    """Items per second of one call of ``fn`` that handles ``count`` items."""
    started = time.perf_counter()
    fn()
    return count / (time.perf_counter() - started)


@dataclass(frozen=True)
class Spread:
    best: float
    median: float

    @property
    def note(self) -> str:
        return f"best of {REPEATS}; median {self.median:,.0f}"


REPEATS = 5


def rate_spread(count: int, fn: Callable[[], object]) -> Spread:
    """Best and median of a few runs. This VM's CPU throughput swings by up to 2x between back-to-back runs,
    and noise only ever slows a CPU-bound loop down, so the best run is the figure and the median its context."""
    rates = sorted(rate(count, fn) for _ in range(REPEATS))
    return Spread(rates[-1], rates[len(rates) // 2])


def report(title: str, figures: list[Figure], ratios: list[Ratio]) -> None:
    console = Console()
    table = Table("figure", "value", "unit", "note", title=title)
    for f in figures:
        table.add_row(f.name, f"{f.value:,.0f}" if f.value >= 100 else f"{f.value:,.2f}", f.unit, f.note)
    console.print(table)
    by_name = {f.name: f.value for f in figures}
    ratio_table = Table("ratio", "value", "target", "met")
    for r in ratios:
        value = by_name[r.numerator] / by_name[r.denominator]
        met = "" if r.target is None else ("yes" if value >= r.target else "NO")
        ratio_table.add_row(r.name, f"{value:.2f}x", "" if r.target is None else f">= {r.target}x", met)
    console.print(ratio_table)


def raw_consume_rate(settings: Settings, ends: Mapping[TopicPartition, int]) -> float:
    """Records/s of a bare aiokafka ``getmany`` loop (no group, no decoding) reading the given partitions
    from the beginning to ``ends``: the ceiling a consumer of these topics can reach on this machine."""
    return asyncio.run(_raw_consume_rate(settings, ends))


async def _raw_consume_rate(settings: Settings, ends: Mapping[TopicPartition, int]) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        expected, seen = sum(ends.values()), 0
        started = time.perf_counter()
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(b) for b in batches.values())
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def folded_states(lines: list[bytes], config: FoldConfig) -> list[ProfileState]:
    """The live profiles of ``lines`` folded offline (the worker's pure fold), each with a last event."""
    now, limits = datetime.now(UTC), ValidationLimits()
    folder = OfflineFolder(config)
    arrivals = []
    for offset, line in enumerate(lines):
        event = validate_event(line, now=now, limits=limits)
        if not isinstance(event, Rejection):
            arrivals.append(Arrival(RawSource("bench", 0, offset), line, event))
    folder.feed(arrivals)
    return [s for s in folder.profiles().values() if s.merged_into is None and s.last_event_ms is not None]


def best_us(items: Sequence[T], step: Callable[[T], object]) -> float:
    """µs per item of ``step``, best of 3 passes (noise only ever slows a CPU-bound loop down)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for item in items:
            step(item)
        best = min(best, time.perf_counter() - started)
    return best / len(items) * 1e6
