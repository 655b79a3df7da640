"""Foundation figures: decode+validate, simulator and producer rates, beside raw aiokafka on the same broker.

Everything runs in one process, one core at a time, against the real local broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from datetime import UTC, datetime

import orjson
from aiokafka import TopicPartition

from bench.harness import Figure, Ratio, Spread, bench_settings, rate_spread, raw_consume_rate
from schemas.topics import CLICKS, full_name
from schemas.validation import Rejection, validate_event
from services.kafka_clients import make_async_producer, make_consumer, topic_partitions
from services.producer import produce_lines
from services.settings import Settings
from services.simulator import Simulation, SimulationConfig


def corpus(events: int, seed: int = 1) -> list[bytes]:
    """Simulator lines (the realistic mix, including its duplicates, late and malformed lines)."""
    customers = max(50, events // 75)  # the simulator emits ~2.7 events per customer-day
    lines = Simulation(SimulationConfig(customers=customers, days=30, seed=seed)).lines()
    return list(itertools.islice(lines, events))


def simulator_rate(customers: int, days: int) -> tuple[Spread, int]:
    count = sum(1 for _ in Simulation(SimulationConfig(customers=customers, days=days, seed=3)).lines())
    spread = rate_spread(count, lambda: sum(1 for _ in Simulation(SimulationConfig(customers, days, seed=3)).lines()))
    return spread, count


def validation_rates(lines: list[bytes], settings: Settings) -> tuple[Spread, Spread, float]:
    limits = settings.validation.limits()
    now = datetime.now(UTC)

    def decode() -> None:
        for line in lines:
            with contextlib.suppress(orjson.JSONDecodeError):
                orjson.loads(line)

    def validate() -> None:
        for line in lines:
            validate_event(line, now=now, limits=limits)

    rejected = sum(isinstance(validate_event(line, now=now, limits=limits), Rejection) for line in lines)
    return rate_spread(len(lines), decode), rate_spread(len(lines), validate), rejected / len(lines)


async def aiokafka_produce(settings: Settings, topic: str, lines: list[bytes]) -> float:
    producer = make_async_producer(settings, "bench")
    await producer.start()
    try:
        started = time.perf_counter()
        pending = []
        for i, line in enumerate(lines):
            pending.append(await producer.send(topic, line, key=str(i % 5000).encode()))
        await asyncio.gather(*pending)
        return len(lines) / (time.perf_counter() - started)
    finally:
        await producer.stop()


def run(base: Settings, events: int) -> tuple[list[Figure], list[Ratio]]:
    lines = corpus(events)
    decode, validate, rejected_share = validation_rates(lines, base)
    sim, sim_events = simulator_rate(customers=500, days=30)
    figures = [
        Figure("decode only (orjson.loads)", decode.best, "events/s", f"{len(lines):,} lines, 1 core; {decode.note}"),
        Figure("decode + validate", validate.best, "events/s", f"{rejected_share:.2%} rejected; {validate.note}"),
        Figure("simulator", sim.best, "events/s", f"{sim_events:,} lines (500 x 30 d); {sim.note}"),
    ]
    with bench_settings(base) as settings:
        raw_topic = full_name(CLICKS, settings.kafka.topic_prefix)
        raw_produce = asyncio.run(aiokafka_produce(settings, raw_topic, lines))
        raw_consume = raw_consume_rate(settings, _end_offsets(settings, raw_topic))
        produced = produce_lines(lines, settings)
        figures += [
            Figure("raw aiokafka produce", raw_produce, "events/s", "acks=all, idempotent, no validation"),
            Figure("raw aiokafka consume", raw_consume, "events/s", "getmany, no decoding"),
            Figure("rapport produce", produced.rate, "events/s", "kafka-python, validate + route + acks=all"),
            Figure("target: decode + validate", 200_000, "events/s", "per core (issue 2)"),
        ]
    ratios = [
        Ratio("validate / decode-only", "decode + validate", "decode only (orjson.loads)"),
        Ratio("rapport produce / raw aiokafka produce", "rapport produce", "raw aiokafka produce"),
        Ratio("decode + validate / target", "decode + validate", "target: decode + validate", target=1.0),
    ]
    return figures, ratios


def _end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = make_consumer(settings, "bench-ends")
    try:
        ends = consumer.end_offsets(topic_partitions(consumer, topic))
        return {TopicPartition(tp.topic, tp.partition): end for tp, end in ends.items()}
    finally:
        consumer.close()
