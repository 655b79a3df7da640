"""The RFM population in the real Redis: the thresholds the API caches give the exact ranks' scores."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from profiles.state import new_profile
from profiles.store import ABSENT, ProfileStore, ProfileWrite, rfm_position
from services.redis_client import make_redis
from services.settings import Settings

pytestmark = pytest.mark.integration


def test_thresholds_read_from_redis_score_every_buyer_like_exact_ranks(settings: Settings, local_stack: object) -> None:
    asyncio.run(_check(settings))


async def _check(settings: Settings) -> None:
    rng = random.Random(3)
    redis = make_redis(settings)
    store = ProfileStore(redis, f"rfm-{uuid.uuid4().hex[:6]}")
    try:
        states = []
        for i in range(237):
            state = new_profile(f"c-{i}", f"c-{i}")
            state.orders = rng.randint(1, 6)
            state.gross_cents = rng.randint(0, 40) * 500
            state.last_purchase_ms = rng.randint(0, 20) * 86_400_000
            states.append(state)
        await store.save([ProfileWrite(s.profile_id, ABSENT, 0, s, True) for s in states])
        thresholds = await store.rfm_thresholds()
        assert thresholds.buyers == len(states)
        for state in states:
            exact = await store.rfm_ranks(state)
            position = rfm_position(state)
            assert exact is not None
            assert position is not None
            assert thresholds.scores(position) == exact.scores()
    finally:
        keys = [k async for k in redis.scan_iter(match=f"rapport:{store.namespace}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
