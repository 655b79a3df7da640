"""An exclusive lock in Redis for a command that must not run twice at once (``rapport dlq redrive``).

The holder is named ``host pid token`` and refreshes the lock while it runs. A lock whose holder ran on this
host and is gone (killed: it could not release it) is taken over at once; one from another host lapses
``ttl_ms`` after its last refresh, so a holder frozen longer than that meets the next. Such a holder
neither extends nor deletes the lock once another has it: both compare the holder first, in one script
(before session 37 a plain ``SET XX`` refresh took the next holder's lock over, and the release deleted
it). It says so at ERROR, and its ``Held.check``, which asks Redis, raises ``LockLostError``: the holder
calls it before each step that must not overlap with another's (a redrive, before each batch it sends), so
the two overlap at most by the step under way. A lock that lapsed with nobody taking it is taken again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from profiles.redis_values import as_text

log = logging.getLogger(__name__)

#: KEYS[1] the lock, ARGV[1] its holder, ARGV[2] its time to live in ms: extended while it is the holder's, taken
#: again if it lapsed and nobody took it; 0 if another holder has it.
_REFRESH: Final = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
#: KEYS[1] the lock, ARGV[1] its holder: deleted only while it is the holder's.
_RELEASE: Final = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class LockBusyError(RuntimeError):
    """Someone else holds the lock."""


class LockLostError(RuntimeError):
    """The lock lapsed while its holder was held up, and another holder took it."""


class Held:
    """The lock as its holder sees it while it runs."""

    def __init__(self, redis: Redis, lock: str, mine: str, ttl_ms: int, what: str) -> None:
        self.redis, self.lock, self.mine, self.ttl_ms, self.what = redis, lock, mine, ttl_ms, what
        self.lost = False

    async def refresh(self) -> bool:
        """Extend the lock (or take it again if it lapsed and nobody took it); False once another holder has
        it, which is then logged at ERROR and remembered."""
        if self.lost:
            return False
        if await self.redis.eval(_REFRESH, 1, self.lock, self.mine, str(self.ttl_ms)):
            return True
        self.lost = True
        log.error(
            "the %s lock %s lapsed and another holder took it: this process was held up longer than %d ms; "
            "it stops before its next step", self.what, self.lock, self.ttl_ms,
        )  # fmt: skip
        return False

    async def check(self) -> None:
        """Raise ``LockLostError`` if another holder took the lock: the work must stop before its next step.
        It asks Redis (a refresh) rather than trusting the refresh task: a process frozen past the lock's
        time to live can resume its work before that task runs again."""
        if not await self.refresh():
            raise LockLostError(
                f"the {self.what} lock {self.lock} lapsed while this process was held up, and another {self.what} "
                "took it: stopped before overlapping with it"
            )


@asynccontextmanager
async def exclusive(redis: Redis, lock: str, ttl_ms: int, *, what: str) -> AsyncIterator[Held]:
    """Hold ``lock`` while the block runs, refreshed every third of ``ttl_ms``; ``what`` names the holder's
    work in the error another caller gets."""
    mine = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}"
    if not await redis.set(lock, mine, nx=True, px=ttl_ms) and not await _take_over(redis, lock, mine, ttl_ms):
        raise LockBusyError(f"another {what} is running: {_holder(await redis.get(lock))}")
    held = Held(redis, lock, mine, ttl_ms, what)

    async def refresh() -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            try:
                if not await held.refresh():
                    return
            except RedisError as exc:  # the next refresh may get through before the lock lapses
                log.warning("could not refresh the %s lock %s: %r", what, lock, exc)

    refreshing = asyncio.create_task(refresh())
    try:
        yield held
    finally:
        refreshing.cancel()
        await asyncio.wait({refreshing})  # unlike awaiting it, not a place to lose this task's own cancellation
        try:
            await redis.eval(_RELEASE, 1, lock, mine)
        except RedisError as exc:  # the work is done (or failed on its own): the lock lapses instead
            log.warning("could not release the %s lock %s (%r): it lapses in %d ms", what, lock, exc, ttl_ms)


async def running_holder(redis: Redis, lock: str) -> str | None:
    """Who holds ``lock`` if it may still be working: a process of this host that is running, or one of
    another host (until the lock lapses); None if nobody does, or its holder was of this host and is gone."""
    held = _holder(await redis.get(lock))
    return held if _running(held) else None


def _running(held: str) -> bool:
    host, _, rest = held.partition(" ")
    pid = rest.split(" ", 1)[0]
    return bool(held) and (host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)))


async def _take_over(redis: Redis, lock: str, mine: str, ttl_ms: int) -> bool:
    """Take ``lock`` if it lapsed meanwhile or its holder was a process of this host that is gone."""
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(lock)
        if _running(_holder(await pipe.get(lock))):
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
