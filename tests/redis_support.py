"""A namespace of a test's own in the real Redis, removed afterwards; a Redis server of a test's own; one key
set or read from a synchronous test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from redis.asyncio import Redis

from deploy.localstack import RedisNode
from services.redis_client import make_redis
from services.settings import Settings, StackSettings
from tests.api_support import free_port
from tests.kafka_support import Topics


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


def set_key(settings: Settings, key: str, value: str | None) -> None:
    """Set ``key`` to ``value`` (None: delete it), as another process would."""

    async def run() -> None:
        redis = make_redis(settings)
        try:
            await (redis.delete(key) if value is None else redis.set(key, value))
        finally:
            await redis.aclose()

    asyncio.run(run())


def get_key(settings: Settings, key: str) -> bytes | str | None:
    async def run() -> bytes | str | None:
        redis = make_redis(settings)
        try:
            return await redis.get(key)
        finally:
            await redis.aclose()

    return asyncio.run(run())
