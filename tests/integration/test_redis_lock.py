"""services.redis_lock against the real Redis: refreshed while held, and a holder held up past its lock's
time to live neither extends nor deletes the lock the next holder took, and is told it lost it."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from services.redis_client import make_redis
from services.redis_lock import LockBusyError, LockLostError, exclusive
from services.settings import Settings

pytestmark = pytest.mark.integration

TTL_MS = 300  # refreshed every 100 ms


def test_a_held_lock_is_refreshed_and_refuses_a_second_holder(settings: Settings, local_stack: object) -> None:
    async def run() -> tuple[int, bool]:
        redis = make_redis(settings)
        lock = f"test:lock:{uuid.uuid4().hex}"
        try:
            async with exclusive(redis, lock, TTL_MS, what="test"):
                await asyncio.sleep(1.0)  # three times the lock's time to live
                ttl = await redis.pttl(lock)
                with pytest.raises(LockBusyError, match="another test is running"):
                    async with exclusive(redis, lock, TTL_MS, what="test"):
                        pass
            return ttl, bool(await redis.exists(lock))
        finally:
            await redis.aclose()

    ttl, left = asyncio.run(run())
    assert 0 < ttl <= TTL_MS
    assert not left, "released on the way out"


def test_a_holder_held_up_past_its_lock_neither_extends_nor_deletes_the_next_holders(
    settings: Settings, local_stack: object, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock lapses while its holder is held up (simulated: the key replaced by another host's holder)."""
    other = "another-host 4242 feedface"

    async def run() -> tuple[bytes | str | None, int]:
        redis = make_redis(settings)
        lock = f"test:lock:{uuid.uuid4().hex}"
        try:
            async with exclusive(redis, lock, TTL_MS, what="test") as held:
                await held.check()  # still its own
                await redis.set(lock, other, px=10_000)
                await asyncio.sleep(0.5)  # several refreshes
                with pytest.raises(LockLostError, match="another test took it"):
                    await held.check()
            return await redis.get(lock), await redis.pttl(lock)
        finally:
            await redis.aclose()

    with caplog.at_level(logging.ERROR, logger="services.redis_lock"):
        holder, ttl = asyncio.run(run())
    assert holder == other.encode(), "the next holder's lock was taken over or deleted"
    assert ttl > 9_000, "the next holder's lock had its time to live changed"
    assert "lapsed and another holder took it" in caplog.text


def test_a_lapsed_lock_nobody_took_is_taken_again(settings: Settings, local_stack: object) -> None:
    async def run() -> tuple[bytes | str | None, bool]:
        redis = make_redis(settings)
        lock = f"test:lock:{uuid.uuid4().hex}"
        try:
            async with exclusive(redis, lock, TTL_MS, what="test"):
                mine = await redis.get(lock)
                await redis.delete(lock)  # lapsed
                await asyncio.sleep(0.25)
                again = await redis.get(lock)
            return (again if again == mine else None), bool(await redis.exists(lock))
        finally:
            await redis.aclose()

    again, left = asyncio.run(run())
    assert again is not None, "not taken again"
    assert not left


def test_a_holder_resumed_before_its_refresh_runs_finds_its_lock_taken_when_it_checks(
    settings: Settings, local_stack: object
) -> None:
    """Frozen past its lock's time to live, a process can resume its work before the refresh task runs again
    (here: a refresh due in 20 s): the check before its next step asks Redis."""

    async def run() -> None:
        redis = make_redis(settings)
        lock = f"test:lock:{uuid.uuid4().hex}"
        try:
            async with exclusive(redis, lock, 60_000, what="test") as held:
                await redis.set(lock, "another-host 4242 feedface", px=10_000)
                with pytest.raises(LockLostError):
                    await held.check()
        finally:
            await redis.aclose()

    asyncio.run(run())
