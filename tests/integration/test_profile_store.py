"""ProfileStore.save against the real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from profiles.store import ProfileStore
from services.redis_client import make_redis
from services.settings import Settings

pytestmark = pytest.mark.integration


def test_what_goes_before_the_profiles_is_written_when_no_profile_changes(
    settings: Settings, local_stack: object
) -> None:
    """A batch of progress markers only: no profile is written, the models' progress it moved still is."""
    asyncio.run(_check(settings))


async def _check(settings: Settings) -> None:
    redis = make_redis(settings)
    store = ProfileStore(redis, f"store-{uuid.uuid4().hex[:6]}")
    key = f"rapport:{store.namespace}:ml:progress:0"
    try:

        def progress(pipe: Redis) -> None:
            pipe.set(key, b"moved")

        assert await store.save([], before=progress) == []
        assert await redis.get(key) == b"moved"
        assert await store.save([]) == []  # and nothing at all is a no-op
    finally:
        await redis.delete(key)
        await redis.aclose()
