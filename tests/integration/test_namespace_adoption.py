"""What a replayed namespace adopts from the served one, in the real Redis: segment definitions (versions,
deletions, version counters) and models (copied as signed until the namespace trains its own)."""

from __future__ import annotations

import asyncio

import pytest

from profiles.model_store import ModelStore
from profiles.segment_store import SegmentStore
from services.settings import Settings
from tests.redis_support import scratch_namespace

pytestmark = pytest.mark.integration
MODEL = "churn_risk"


def test_definitions_follow_the_served_namespace_and_versions_never_go_back(
    settings: Settings, local_stack: object
) -> None:
    asyncio.run(_definitions(settings))


async def _definitions(settings: Settings) -> None:
    async with scratch_namespace(settings, "served") as (redis, served), scratch_namespace(settings, "new") as (_, new):
        theirs, ours = SegmentStore(redis, served), SegmentStore(redis, new)
        await theirs.save("buyers", "", "transactions.orders >= 1", now_ms=0)
        await theirs.save("buyers", "", "transactions.orders >= 2", now_ms=1)  # version 2
        await theirs.save("gone", "", "true", now_ms=0)
        await ours.save("mine", "", "true", now_ms=0)  # only here: not served, so not kept
        await ours.adopt_definitions(theirs)
        assert await ours.definitions() == await theirs.definitions()
        assert (await ours.definition("buyers")).version == 2  # type: ignore[union-attr]

        await theirs.delete("gone")
        await ours.adopt_definitions(theirs)
        assert set(await ours.definitions()) == {"buyers"}
        # Created again here, "gone" and "mine" go on from the versions they had: change ids never repeat.
        assert (await ours.save("gone", "", "true", now_ms=2)).version == 2
        assert (await ours.save("mine", "", "true", now_ms=2)).version == 2


def test_models_are_adopted_until_the_namespace_trains_its_own(settings: Settings, local_stack: object) -> None:
    asyncio.run(_models(settings))


async def _models(settings: Settings) -> None:
    async with scratch_namespace(settings, "served") as (redis, served), scratch_namespace(settings, "new") as (_, new):
        theirs, ours = ModelStore(redis, served), ModelStore(redis, new)
        assert await ours.adopt(theirs, MODEL) is None  # nothing served yet
        for version in (1, 2, 3):
            await theirs.publish(MODEL, version, f"snapshot {version}".encode(), keep=5)
        assert await ours.adopt(theirs, MODEL) == 3
        assert (await ours.active_version(MODEL), await ours.snapshot(MODEL, 3)) == (3, b"snapshot 3")
        assert await ours.adopt(theirs, MODEL) is None  # already served here

        await theirs.publish(MODEL, 4, b"snapshot 4", keep=5)
        assert await ours.adopt(theirs, MODEL) == 4  # a catch-up serves the newer one, not both
        assert await ours.snapshots(MODEL) == {4: b"snapshot 4"}

        own = await ours.next_version(MODEL)  # this namespace's trainer numbers after what it adopted
        assert own == 5
        await ours.publish(MODEL, own, b"trained here", keep=5)
        await theirs.publish(MODEL, 6, b"snapshot 6", keep=5)
        assert await ours.adopt(theirs, MODEL) is None  # its own model is never replaced
        assert await ours.active_version(MODEL) == own

        await theirs.rollback(MODEL, 2)
        elsewhere = ModelStore(redis, f"{new}-b")
        try:
            assert await elsewhere.adopt(theirs, MODEL) == 2  # what is served, a rollback included
        finally:
            await redis.delete(*[k async for k in redis.scan_iter(match=f"rapport:{new}-b:*")])
