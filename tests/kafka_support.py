"""Helpers for tests that talk to the real broker: private topic sets, reading topics back, a broker of a
test's own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from deploy.localstack import KafkaNode
from schemas.topics import CATALOGUE, TOPIC_BY_EVENT_TYPE, full_name
from services.kafka_clients import make_consumer, make_producer, topic_partitions
from services.settings import Settings, StackSettings
from services.topics_admin import admin_client, ensure_topics
from tests.api_support import free_port


@dataclass(frozen=True)
class Topics:
    """A set of catalogue topics on the real broker, and the settings that name them."""

    settings: Settings
    names: dict[str, str]  # logical name → full name

    @property
    def env(self) -> dict[str, str]:
        """Environment for `rapport …` subprocesses so they use these topics."""
        return {
            **os.environ,
            "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": self.settings.kafka.bootstrap_servers,
            "RAPPORT_KAFKA__TOPIC_PREFIX": self.settings.kafka.topic_prefix,
            "RAPPORT_REDIS__URL": self.settings.redis.url,
        }

    def read(self, logical: Iterable[str], expected: int, timeout_s: float = 120.0) -> list[ConsumerRecord]:
        """Every record of the given topics from the beginning: at least ``expected``, then a grace poll
        so that records beyond the expectation (duplicates) are seen too."""
        consumer = make_consumer(self.settings, "test-readback")
        try:
            consumer.assign([tp for name in logical for tp in topic_partitions(consumer, self.names[name])])
            consumer.seek_to_beginning()
            return _drain(consumer, expected, timeout_s)
        finally:
            consumer.close()

    def read_to_end(self, logical: Iterable[str]) -> list[ConsumerRecord]:
        """Every record the given topics hold now, each partition in offset order."""
        consumer = make_consumer(self.settings, "test-readback")
        try:
            partitions = [tp for name in logical for tp in topic_partitions(consumer, self.names[name])]
            consumer.assign(partitions)
            consumer.seek_to_beginning()
            ends = consumer.end_offsets(partitions)
            records: list[ConsumerRecord] = []
            while any(consumer.position(tp) < end for tp, end in ends.items()):
                for batch in consumer.poll(timeout_ms=500, max_records=10_000).values():
                    records.extend(batch)
            return records
        finally:
            consumer.close()


def _drain(consumer: KafkaConsumer, expected: int, timeout_s: float) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500, max_records=10_000).values():
            records.extend(batch)
    for batch in consumer.poll(timeout_ms=1_000).values():
        records.extend(batch)
    return records


@contextmanager
def created_topics(settings: Settings) -> Iterator[Topics]:
    ensure_topics(settings)
    names = _catalogue_names(settings)
    try:
        yield Topics(settings, names)
    finally:
        with admin_client(settings) as admin:
            admin.delete_topics(list(names.values()))


def _catalogue_names(settings: Settings) -> dict[str, str]:
    return {spec.name: full_name(spec, settings.kafka.topic_prefix) for spec in CATALOGUE}


def committed_offsets(settings: Settings, group: str) -> dict[TopicPartition, OffsetAndMetadata]:
    """What consumer group ``group`` has committed, per partition (a partition without a commit is absent)."""
    with admin_client(settings) as admin:
        found: dict[TopicPartition, OffsetAndMetadata] = admin.list_group_offsets(group).get(group, {})
        return found


def rapport(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        # Wide enough for Rich's error panels not to wrap the messages the tests look for; after ``env``,
        # which often holds the whole environment, and pytest-xdist's workers set COLUMNS=80.
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=False,
    )


def interruptible(command: list[str]) -> list[str]:
    """``command`` (``python -m services.cli.main …``) with Python's Ctrl-C handler installed: a shell that
    starts a background job without job control (``.ci/run`` under ``nohup … &``) makes it ignore SIGINT,
    and Python keeps an ignored SIGINT ignored. A terminal's Ctrl-C reaches a process that does not."""
    python, module, *args = command[0], command[2], *command[3:]
    boot = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    boot += f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    return [python, "-c", boot, *args]


def produce_raw(topics: Topics, lines: Iterable[bytes]) -> int:
    """Send lines to their raw topics WITHOUT validation, as a producer that bypasses Rapport's would:
    the topic from ``type`` (clicks when unreadable), the key from the ids when there are any."""
    by_type = {spec_type: topics.names[spec.name] for spec_type, spec in TOPIC_BY_EVENT_TYPE.items()}
    producer = make_producer(topics.settings)
    sent = 0
    try:
        for line in lines:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                event = None
            fields = event if isinstance(event, dict) else {}
            topic = by_type.get(str(fields.get("type")), topics.names["events.clicks"])
            key = fields.get("customer_id") or fields.get("anonymous_id")
            producer.send(topic, key=str(key).encode() if key else None, value=line)
            sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def send_changes(topics: Topics, changes: list[dict[str, str]]) -> None:
    """Produce segment changes (their JSON) to ``segments.changes``, keyed by customer as the worker keys them."""
    producer = make_producer(topics.settings)
    try:
        for change in changes:
            key = change["customer_id"].encode()
            producer.send(topics.names["segments.changes"], key=key, value=orjson.dumps(change))
        producer.flush()
    finally:
        producer.close()


def copy_topics(source: Topics, target: Topics, logical: Iterable[str]) -> int:
    """Copy every record of the given topics into ``target``'s, partition for partition, in order, with
    keys, values, headers and timestamps: the same history under other topic names."""
    logical = list(logical)
    renamed = {source.names[name]: target.names[name] for name in logical}
    producer = make_producer(target.settings)
    copied = 0
    try:
        for r in source.read_to_end(logical):
            producer.send(
                renamed[r.topic],
                key=r.key,
                value=r.value,
                headers=r.headers,
                partition=r.partition,
                timestamp_ms=r.timestamp,
            )
            copied += 1
        producer.flush()
    finally:
        producer.close()
    return copied


@contextmanager
def private_kafka(settings: Settings, tmp_path: Path) -> Iterator[tuple[KafkaNode, Topics]]:
    """A Kafka broker of this test alone, to fault without touching the session's (its jars from the shared
    cache), with the catalogue's topics under ``settings``' prefix, and those topics."""
    kafka_port, controller_port = free_port(), free_port()
    while controller_port == kafka_port:
        controller_port = free_port()
    stack = StackSettings(
        state_dir=tmp_path / "kafka-stack",
        cache_dir=settings.stack.cache_dir,
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        kafka_heap="512m",
        start_timeout_s=180,
    )
    kafka = KafkaNode(stack)
    kafka.start()
    private = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{kafka_port}"})}
    )
    try:
        # Not deleted afterwards: they go with the broker's storage, and a test may end with the broker down.
        ensure_topics(private)
        yield kafka, Topics(private, _catalogue_names(private))
    finally:
        kafka.stop()
