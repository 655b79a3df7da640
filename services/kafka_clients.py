"""kafka-python clients built from settings, for the CLI tools (the stream workers use Faust's own)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AsyncTopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from services.settings import Settings

log = logging.getLogger(__name__)


def make_producer(settings: Settings) -> KafkaProducer:
    """Idempotent with acks=all: a retried batch is not duplicated and a send counts once replicated."""
    return KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        bootstrap_timeout_ms=settings.kafka.bootstrap_timeout_ms,
        client_id=f"{settings.kafka.client_id}-producer",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
    )


def make_consumer(settings: Settings, purpose: str, **options: object) -> KafkaConsumer:
    """A group-less consumer (partitions are assigned by the caller); commits nothing."""
    return KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        bootstrap_timeout_ms=settings.kafka.bootstrap_timeout_ms,
        client_id=f"{settings.kafka.client_id}-{purpose}",
        enable_auto_commit=False,
        **options,
    )


def make_admin(settings: Settings, purpose: str, request_timeout_ms: int = 30_000) -> KafkaAdminClient:
    """An admin client; the caller closes it."""
    return KafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        bootstrap_timeout_ms=settings.kafka.bootstrap_timeout_ms,
        client_id=f"{settings.kafka.client_id}-{purpose}",
        request_timeout_ms=request_timeout_ms,
    )


class MissingTopicsError(RuntimeError):
    """Topics a command needs do not exist (``rapport topics create`` makes them). The broker refuses to create
    them on use, so a producer would wait for their metadata and then fail as if Kafka were unreachable."""

    def __init__(self, topics: Iterable[str]) -> None:
        names = sorted(topics)
        named = ", ".join(repr(t) for t in names)
        subject = f"topic {named} does not exist" if len(names) == 1 else f"topics {named} do not exist"
        super().__init__(f"{subject}: run `rapport topics create`, or check RAPPORT_KAFKA__TOPIC_PREFIX")


def require_topics(settings: Settings, topics: Iterable[str]) -> None:
    """Raise ``MissingTopicsError`` unless every one of ``topics`` exists. Blocking."""
    consumer = make_consumer(settings, "topics-check")
    try:
        missing = set(topics) - consumer.topics()
    finally:
        consumer.close()
    if missing:
        raise MissingTopicsError(missing)


def topic_partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic`` (empty if the topic does not exist)."""
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


def end_offsets(settings: Settings, topics: Iterable[str], purpose: str) -> dict[TopicPartition, int]:
    """Where each partition of ``topics`` ends now (a topic that does not exist has none). Blocking."""
    consumer = make_consumer(settings, purpose)
    try:
        return end_offsets_with(consumer, topics)
    finally:
        consumer.close()


def end_offsets_with(consumer: KafkaConsumer, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """``end_offsets`` with a consumer the caller owns."""
    ends: dict[TopicPartition, int] = consumer.end_offsets(
        [tp for topic in topics for tp in topic_partitions(consumer, topic)]
    )
    return ends


def make_async_producer(settings: Settings, purpose: str) -> AIOKafkaProducer:
    """The asyncio producer of the workers: idempotent, acks=all, large batches (call ``start()`` on it)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        client_id=f"{settings.kafka.client_id}-{purpose}",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=512 * 1024,
    )


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, finished also when the broker is unreachable.

    aiokafka's fetcher cancels its fetches on stop and awaits them, so a fetch waiting between two retries
    re-raises that CancelledError out of ``stop()``, before the client is closed (aio-libs/aiokafka#647): a
    replay that read its last record while the broker was down died of it instead of finishing. Only that
    error is absorbed; a cancellation of the caller's own task goes on as usual.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        await consumer._client.close()  # what ``stop()`` did not reach, whoever's cancellation it was
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.info("stopping a consumer cancelled a fetch that was waiting for the broker; its client is closed")


async def stop_producer(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """``producer.stop()``, given up after ``timeout_s``: aiokafka's stop first delivers every pending record,
    retrying for as long as the broker is down, so an API stopped during an outage, holding a record it had
    answered 503 for, was still running a minute later. What is left past ``timeout_s`` is dropped: callers stop
    a producer only once nothing waits for its acknowledgements, so every such record was reported as not
    stored (the API answered 503, the worker did not commit what produced it) and is sent again."""
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
    except TimeoutError:
        log.warning("the broker did not take a stopping producer's last records in %.0f s: they are dropped", timeout_s)
        await producer._sender.close()  # what ``stop()`` did not reach
        await producer.client.close()


async def commit_offsets(
    consumer: AIOKafkaConsumer, timeout_s: float, offsets: Mapping[AsyncTopicPartition, int] | None = None
) -> None:
    """``consumer.commit()``, given up after ``timeout_s`` with ``TimeoutError`` (an outage, ``streams.backoff``):
    while the broker is down aiokafka keeps looking for the group's coordinator, so a deliverer stopped then
    never stopped, and its liveness file went stale. A commit abandoned here is retried with its batch.
    ``offsets``: commit those positions; by default, the consumer's own of every assigned partition."""
    await asyncio.wait_for(consumer.commit(dict(offsets) if offsets is not None else None), timeout_s)
