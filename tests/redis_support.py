"""A namespace of a test's own in the real Redis, removed afterwards; a Redis server, or a Kafka broker, of a
test's own (to fault without touching the session's)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from redis.asyncio import Redis

from deploy.localstack import KafkaNode, RedisNode
from services.redis_client import make_redis
from services.settings import Settings, StackSettings
from tests.api_support import free_port
from tests.kafka_support import Topics, created_topics


@asynccontextmanager
async def scratch_namespace(settings: Settings, tag: str) -> AsyncIterator[tuple[Redis, str]]:
    """A client and a fresh namespace ``<tag>-<random>``; every key of the namespace is deleted at the end."""
    redis = make_redis(settings)
    namespace = f"{tag}-{uuid.uuid4().hex[:6]}"
    try:
        yield redis, namespace
    finally:
        keys = [k async for k in redis.scan_iter(match=f"rapport:{namespace}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


@contextmanager
def private_redis(topics: Topics, tmp_path: Path) -> Iterator[tuple[RedisNode, Topics]]:
    """A Redis of this test alone, and ``topics`` configured to use it: faulting the session's Redis could
    hit a stack the user is running."""
    redis = RedisNode(StackSettings(state_dir=tmp_path / "redis-stack", redis_port=free_port()))
    redis.start()
    private = topics.settings.model_copy(
        update={"redis": topics.settings.redis.model_copy(update={"url": f"redis://127.0.0.1:{redis.port}/0"})}
    )
    try:
        yield redis, Topics(private, topics.names)
    finally:
        redis.stop()


@contextmanager
def private_kafka(settings: Settings, tmp_path: Path) -> Iterator[tuple[KafkaNode, Topics]]:
    """A Kafka broker of this test alone (its jars from the shared cache), with the catalogue's topics under
    ``settings``' prefix, and those topics."""
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
        with created_topics(private) as topics:
            yield kafka, topics
    finally:
        kafka.stop()
