"""An exclusive lock in Redis for a command that must not run twice at once (``rapport dlq redrive``).

The holder is named ``host pid token`` and refreshes the lock while it runs. A lock whose holder ran on this
host and is gone (killed: it could not release it) is taken over at once; one from another host lapses
``ttl_ms`` after its last refresh, so a holder frozen longer than that can overlap with the next.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import WatchError

from profiles.redis_values import as_text


class LockBusyError(RuntimeError):
    """Someone else holds the lock."""


@asynccontextmanager
async def exclusive(redis: Redis, lock: str, ttl_ms: int, *, what: str) -> AsyncIterator[None]:
    """Hold ``lock`` while the block runs, refreshed every third of ``ttl_ms``; ``what`` names the holder's
    work in the error another caller gets."""
    mine = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}"
    if not await redis.set(lock, mine, nx=True, px=ttl_ms) and not await _take_over(redis, lock, mine, ttl_ms):
        raise LockBusyError(f"another {what} is running: {_holder(await redis.get(lock))}")

    async def refresh() -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            await redis.set(lock, mine, xx=True, px=ttl_ms)

    refreshing = asyncio.create_task(refresh())
    try:
        yield
    finally:
        refreshing.cancel()
        if _holder(await redis.get(lock)) == mine:
            await redis.delete(lock)


async def _take_over(redis: Redis, lock: str, mine: str, ttl_ms: int) -> bool:
    """Take ``lock`` if it lapsed meanwhile or its holder was a process of this host that is gone."""
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(lock)
        held = _holder(await pipe.get(lock))
        host, _, rest = held.partition(" ")
        pid = rest.split(" ", 1)[0]
        if held and (host != socket.gethostname() or not pid.isdigit() or _alive(int(pid))):
            return False
        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        pipe.set(lock, mine, px=ttl_ms)
        try:
            await pipe.execute()
        except WatchError:
            return False
    return True


def _holder(value: bytes | str | None) -> str:
    return "" if value is None else as_text(value)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
