"""ProfileStore.save against the real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from profiles.config import LinkLimits
from profiles.state import new_profile
from profiles.store import ABSENT, ProfileStore, ProfileWrite, watermark_bytes
from services.redis_client import make_redis
from services.settings import Settings
from tests.redis_support import scratch_namespace

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


def test_a_deleted_profile_forgets_only_the_links_that_point_at_it(settings: Settings, local_stack: object) -> None:
    asyncio.run(_forget(settings))


async def _forget(settings: Settings) -> None:
    receipt = "er_" + "3" * 32
    async with scratch_namespace(settings, "forget") as (redis, namespace):
        store = ProfileStore(redis, namespace)
        claims = [("a-mine", "c-1", "e1"), ("A-Mine-Too", "c-1", "e3"), ("a-theirs", "c-2", "e2")]
        await store.link(claims, [("c-1", "me@x.org"), ("c-2", "them@x.org")], LinkLimits(10, 10))
        forget = ("a-mine", "A-Mine-Too", "a-theirs", "me@x.org", "them@x.org")
        gone = ProfileWrite("c-1", ABSENT, -1, None, False, receipt, forget=forget)
        assert await store.save([gone]) == []
        keys = {i: store.email_key(i) if "@" in i else store.alias_key(i) for i in forget}
        assert {i: await redis.exists(k) for i, k in keys.items()} == {
            "a-mine": 0,
            "A-Mine-Too": 0,  # an id with capitals: its email key has another hash tag, only the alias is tried
            "a-theirs": 1,
            "me@x.org": 0,
            "them@x.org": 1,
        }
        # Another customer's ids stay theirs: their events must not be refused.
        assert await store.erased(list(forget)) == dict.fromkeys(("a-mine", "A-Mine-Too", "me@x.org"), receipt)
        # The erased customer's counts of links go with it (their members are its anonymous ids and emails).
        counts = (store.links_key("c-1"), store.named_key("c-1"), store.links_key("c-2"), store.named_key("c-2"))
        assert [await redis.exists(k) for k in counts] == [0, 0, 1, 1]


def test_a_key_set_if_all_written_is_set_with_the_profiles_and_never_when_one_is_refused(
    settings: Settings, local_stack: object
) -> None:
    """A replay's checkpoint goes with its chunk: set in the chunk's transaction when every profile is
    written, and not at all when one is refused (the rest is written; the refusal leaves no mark behind)."""
    asyncio.run(_set_if_all_written(settings))


async def _set_if_all_written(settings: Settings) -> None:
    async with scratch_namespace(settings, "allw") as (redis, namespace):
        store = ProfileStore(redis, namespace)
        key = f"rapport:{namespace}:replay"

        def write(pid: str, expected: bytes, watermark: int) -> ProfileWrite:
            return ProfileWrite(pid, expected, watermark, new_profile(pid, pid), False)

        refused = await store.save(
            [write("c-1", ABSENT, 1), write("c-2", watermark_bytes(7), 8)], atomic=True, if_all_written=(key, b"one")
        )
        assert refused == ["c-2"]
        assert await redis.get(key) is None
        assert await redis.exists(store.profile_key("c-1"), store.profile_key("c-2")) == 1
        assert await redis.exists(f"{key}:refused") == 0

        refused = await store.save(
            [write("c-1", watermark_bytes(1), 2), write("c-2", ABSENT, 1)], atomic=True, if_all_written=(key, b"two")
        )
        assert refused == []
        assert await redis.get(key) == b"two"
        assert await redis.exists(store.profile_key("c-1"), store.profile_key("c-2")) == 2

        with pytest.raises(ValueError, match="atomic"):
            await store.save([], if_all_written=(key, b"three"))
