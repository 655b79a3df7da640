"""Pauses between attempts at something that failed because Redis or Kafka is unavailable."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field


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
