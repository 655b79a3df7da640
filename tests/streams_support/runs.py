"""Driving counting workers against the real broker and Redis: keyed load, worker processes, read-back."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import redis
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from bench import harness
from services.kafka_clients import make_consumer, topic_partitions
from services.settings import Settings
from tests.kafka_support import committed_offsets
from tests.streams_support.counting_worker import CountingKeys

REPO = Path(__file__).resolve().parents[2]

# About the size of a simulator click; the payload is opaque to the counting handler.
VALUE = b'{"type":"click","event_id":"00000000-0000-0000-0000-000000000000","page":"/products/1234","ms":1}' * 2


def keyed_load(count: int, keys: int = 1000, seed: int = 1) -> list[bytes]:
    """``count`` record keys drawn from ``k0 … k{keys-1}``."""
    rng = random.Random(seed)
    names = [f"k{i}".encode() for i in range(keys)]
    return [rng.choice(names) for _ in range(count)]


def expected_counts(keys: list[bytes]) -> Counter[str]:
    """The oracle: what the counting handler must have stored once every record was applied once."""
    return Counter(key.decode() for key in keys)


def produce(settings: Settings, topic: str, keys: list[bytes], rate: float | None = None) -> dict[int, int]:
    """Produce one record per key, partitioned like any Kafka client would, at most ``rate`` records/s;
    returns the end offsets."""
    asyncio.run(_produce(settings, topic, keys, rate))
    return end_offsets(settings, topic)


async def _produce(settings: Settings, topic: str, keys: list[bytes], rate: float | None) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        chunk = len(keys) if rate is None else max(1, int(rate / 10))
        started = time.monotonic()
        sent = []
        for at in range(0, len(keys), chunk):
            by_partition: dict[int, list[bytes]] = defaultdict(list)
            for key in keys[at : at + chunk]:
                by_partition[partitioner(key, partitions, partitions)].append(key)
            # Whole batches per partition: one send per record would take most of a test's time.
            for partition, partition_keys in by_partition.items():
                batch = producer.create_batch()
                for key in partition_keys:
                    if batch.append(key=key, value=VALUE, timestamp=None) is None:
                        sent.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        batch.append(key=key, value=VALUE, timestamp=None)
                sent.append(await producer.send_batch(batch, topic, partition=partition))
            if rate is not None:
                await asyncio.sleep(max(0.0, started + (at + chunk) / rate - time.monotonic()))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


class BackgroundLoad:
    """``produce(..., rate)`` on a thread, so that workers can be crashed while records keep arriving."""

    def __init__(self, settings: Settings, topic: str, keys: list[bytes], rate: float) -> None:
        self._ends: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, args=(settings, topic, keys, rate), daemon=True)
        self._thread.start()

    def _run(self, settings: Settings, topic: str, keys: list[bytes], rate: float) -> None:
        self._ends = produce(settings, topic, keys, rate)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def ends(self, timeout_s: float = 60.0) -> dict[int, int]:
        """Wait for the last record; the end offsets."""
        self._thread.join(timeout_s)
        if self._thread.is_alive() or not self._ends:
            raise RuntimeError("the background load did not finish")
        return self._ends


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = make_consumer(settings, "test-end-offsets")
    try:
        return {tp.partition: offset for tp, offset in consumer.end_offsets(topic_partitions(consumer, topic)).items()}
    finally:
        consumer.close()


def raw_consume_rate(settings: Settings, topic: str, ends: Mapping[int, int]) -> float:
    """Records/s of a plain aiokafka ``getmany`` loop over the whole topic (no group, no processing)."""
    return harness.raw_consume_rate(settings, {TopicPartition(topic, p): end for p, end in ends.items()})


@dataclass
class CountingStore:
    """What the counting workers wrote to Redis, read back synchronously."""

    redis_url: str
    keys: CountingKeys
    client: redis.Redis = field(init=False)

    def __post_init__(self) -> None:
        self.client = redis.Redis.from_url(self.redis_url, socket_timeout=5, decode_responses=True)

    def checkpoints(self) -> dict[int, int]:
        """Partition → next offset to read."""
        stored = self._hash(self.keys.checkpoints)
        return {int(name.rsplit(":", 1)[1]): int(value) for name, value in stored.items()}

    def progress(self) -> int:
        return sum(self.checkpoints().values())

    def counts(self) -> Counter[str]:
        return Counter({key: int(value) for key, value in self._hash(self.keys.counts).items()})

    def epochs(self) -> dict[int, int]:
        """Partition → how many times a worker was assigned it."""
        return {int(name.rsplit(":", 1)[1]): int(value) for name, value in self._hash(self.keys.epochs).items()}

    def _hash(self, key: str) -> dict[str, str]:
        return cast(dict[str, str], self.client.hgetall(key))  # decode_responses=True

    def ticks(self) -> int:
        return int(self.client.get(self.keys.ticks) or 0)

    def caught_up(self, ends: Mapping[int, int]) -> bool:
        checkpoints = self.checkpoints()
        return all(checkpoints.get(p, 0) >= end for p, end in ends.items())

    def clear(self) -> None:
        self.client.delete(*self.keys.all())
        self.client.close()


class CountingWorker:
    """One ``python -m tests.streams_support.counting_worker`` process, its output in ``log``."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.env = dict(env)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.streams_support.counting_worker"],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def freeze(self) -> None:
        """SIGSTOP: the process stops dead, as in a long GC or VM pause, until ``thaw``."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self._end(signal.SIGKILL)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait: the worker commits and exits; returns its exit code."""
        return self._end(signal.SIGTERM, timeout_s)

    def _end(self, sig: signal.Signals, timeout_s: float = 10.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        code, self.process = self.process.returncode, None
        return code

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def worker_env(settings: Settings, *, group: str, key_prefix: str, **stream: str) -> dict[str, str]:
    """Environment of a counting worker: these settings' broker, topics and Redis, and stream overrides."""
    env = {
        **os.environ,
        "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RAPPORT_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "RAPPORT_REDIS__URL": settings.redis.url,
        "COUNTING_GROUP": group,
        "COUNTING_KEY_PREFIX": key_prefix,
    }
    env.update({f"RAPPORT_STREAM__{name.upper()}": value for name, value in stream.items()})
    return env


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> float:
    """Poll until ``condition()``; returns the moment (perf_counter) it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(interval_s)
    return time.perf_counter()


@dataclass
class Run:
    """Counting workers of one consumer group over one topic, writing to one Redis namespace."""

    settings: Settings
    topic: str
    group: str
    store: CountingStore
    log_dir: Path
    workers: list[CountingWorker] = field(default_factory=list)

    def worker(self, name: str = "worker", **stream: str) -> CountingWorker:
        """A started worker; ``stream`` overrides ``StreamSettings`` fields (as strings, like the environment)."""
        env = worker_env(self.settings, group=self.group, key_prefix=self.store.keys.prefix, **stream)
        worker = CountingWorker(env, self.log_dir / f"{name}.log")
        self.workers.append(worker)
        worker.start()
        return worker

    def timed_worker(self, ends: Mapping[int, int]) -> tuple[float, float]:
        """Start a worker on a preloaded topic: (seconds to its first batch, events/s from then until caught up)."""
        launched = time.perf_counter()
        self.worker()
        first = wait_until(lambda: self.store.progress() > 0, 60, "a first batch", interval_s=0.01)
        applied_at_first = self.store.progress()
        done = wait_until(lambda: self.store.caught_up(ends), 60, "caught up", interval_s=0.01)
        return first - launched, (sum(ends.values()) - applied_at_first) / (done - first)

    def caught_up(self, ends: Mapping[int, int], timeout_s: float = 60.0) -> float:
        """Wait until every partition's checkpoint reached its end offset; returns that moment."""
        return wait_until(lambda: self.store.caught_up(ends), timeout_s, f"checkpoints reaching {dict(ends)}")

    def committed(self) -> dict[int, int]:
        """The group's Kafka committed offsets."""
        offsets = committed_offsets(self.settings, self.group)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == self.topic}

    def close(self) -> str:
        """Kill what still runs and drop the Redis keys; returns the workers' logs."""
        for worker in self.workers:
            worker.kill()
        self.store.clear()
        return "\n".join(f"--- {w.log.name} ---\n{w.tail()}" for w in {w.log: w for w in self.workers}.values())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
