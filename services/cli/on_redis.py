"""A one-shot command's work on Redis: a client of its own, closed after it, stoppable (``signals``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from redis.asyncio import Redis

from profiles.segment_store import UnreadableSegmentError
from profiles.store import UnreadableProfileError
from services.cli.signals import run_stoppable
from services.redis_client import make_redis
from services.settings import get_settings

T = TypeVar("T")


def run_on_redis(action: Callable[[Redis], Awaitable[T]], interrupted: str = "interrupted") -> T:
    """``action``'s result, run with a Redis client made from the settings and closed after it; Ctrl-C or
    SIGTERM stop it as ``run_stoppable`` says (``interrupted``: what the command then prints). A stored
    profile or segment definition that does not decode ends the command with exit status 1 and its name."""
    settings = get_settings()

    async def run() -> T:
        redis = make_redis(settings)
        try:
            return await action(redis)
        except UnreadableProfileError as exc:
            typer.echo(f"rapport: {exc}; repair or delete it first (docs/streams.md)", err=True)
            raise typer.Exit(1) from None
        except UnreadableSegmentError as exc:
            typer.echo(f"rapport: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            await redis.aclose()

    return run_stoppable(run(), interrupted)
