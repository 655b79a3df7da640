"""Pauses between attempts at something that failed because Redis or Kafka is unavailable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, TypeVar

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What an unavailable Redis or Kafka raises: waited out, never skipped.
OUTAGES: Final = (RedisError, KafkaError, OSError)


@dataclass(frozen=True)
class Backoff:
    """Exponential from ``initial_s``, capped at ``max_s``, each pause drawn from its upper half.

    The jitter keeps workers that lost Redis together from retrying in lockstep; drawing from the upper
    half (not from zero) keeps the pause long enough to be a pause.

    >>> pauses = Backoff(0.1, 1.0, rng=random.Random(7)).pauses()
    >>> [round(next(pauses), 3) for _ in range(6)]
    [0.066, 0.115, 0.33, 0.429, 0.768, 0.683]
    """

    initial_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)  # jitter, not secrets

    def pauses(self) -> Iterator[float]:
        ceiling = self.initial_s
        while True:
            yield self.rng.uniform(ceiling / 2, ceiling)
            ceiling = min(ceiling * 2, self.max_s)


async def through_outages(
    attempt: Callable[[], Awaitable[T]],
    backoff: Backoff,
    what: str,
    *,
    alive: Callable[[], None],
    stop: asyncio.Event | None = None,
    outages: tuple[type[BaseException], ...] = OUTAGES,
) -> T | None:
    """``attempt()`` until it succeeds, pausing between failures caused by an outage (``outages``), with
    ``alive`` beaten at each pause: backpressure, not a hang. None if ``stop`` is set during a pause."""
    pauses = backoff.pauses()
    while True:
        try:
            return await attempt()
        except outages as exc:
            alive()
            delay = next(pauses)
            log.warning("%s paused %.1f s: %r", what, delay, exc)
            if stop is None:
                await asyncio.sleep(delay)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return None
