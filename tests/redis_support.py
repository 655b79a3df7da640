"""A namespace of a test's own in the real Redis, removed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from services.redis_client import make_redis
from services.settings import Settings


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
