"""A one-shot command's work on Redis: a client of its own, closed after it, stoppable (``signals``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import typer
from redis.asyncio import Redis

from profiles.segment_store import UnreadableSegmentError
from profiles.store import UnreadableProfileError
from services.cli.signals import run_stoppable
from services.redis_client import make_redis
from services.redis_lock import LockBusyError, LockLostError
from services.settings import get_settings

T = TypeVar("T")


#: What ends a one-shot command with exit status 1 and one line (``refused``) rather than a traceback: no
#: defect, but a state of Redis the command cannot work in.
REFUSALS: Final = (UnreadableProfileError, UnreadableSegmentError, LockBusyError, LockLostError)


def refused(exc: BaseException) -> typer.Exit:
    """Say why the command stops (one of ``REFUSALS``) on stderr; the exit to raise."""
    if isinstance(exc, UnreadableProfileError):
        typer.echo(f"rapport: {exc}; repair or delete it first (docs/streams.md)", err=True)
    elif isinstance(exc, LockBusyError):
        typer.echo(f"rapport: {exc}; try again once it has finished", err=True)
    else:  # a lost lock: every step done is recorded, and the other holder does not do it again
        typer.echo(f"rapport: {exc}", err=True)
    return typer.Exit(1)


def run_on_redis(action: Callable[[Redis], Awaitable[T]], interrupted: str = "interrupted") -> T:
    """``action``'s result, run with a Redis client made from the settings and closed after it; Ctrl-C or
    SIGTERM stop it as ``run_stoppable`` says (``interrupted``: what the command then prints). One of
    ``REFUSALS`` ends the command with exit status 1 and why (a damaged key names itself)."""
    settings = get_settings()

    async def run() -> T:
        redis = make_redis(settings)
        try:
            return await action(redis)
        except REFUSALS as exc:
            raise refused(exc) from None
        finally:
            await redis.aclose()

    return run_stoppable(run(), interrupted)
