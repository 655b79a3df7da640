"""Small, fast sampling helpers on :class:`random.Random` (no numpy: per-event draws are scalar anyway)."""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from statistics import NormalDist


def seeded_rng(*parts: object) -> random.Random:
    """A generator seeded from its parts, e.g. ``seeded_rng(seed, index, "behaviour")``.

    String seeds are hashed with SHA-512 by :mod:`random`, so streams are stable across processes and
    Python's hash randomisation. Simulation, not cryptography.
    """
    return random.Random(":".join(("rapport", *map(str, parts))))


def pick(cum: tuple[float, ...], u: float) -> int:
    """Index drawn from cumulative weights ``cum`` with the uniform draw ``u``.

    >>> pick((0.2, 0.5, 1.0), 0.1), pick((0.2, 0.5, 1.0), 0.3), pick((0.2, 0.5, 1.0), 0.9999)
    (0, 1, 2)
    """
    i = bisect_right(cum, u * cum[-1])
    return i if i < len(cum) else len(cum) - 1


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson(``lam``) draw by Knuth's method, in chunks so ``exp(-lam)`` never underflows."""
    k = 0
    while lam > 0:
        step = min(lam, 30.0)
        lam -= step
        limit = math.exp(-step)
        p = rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
    return k


def lognormal_durations(
    median_ms: float, sigma: float, *, floor_ms: int, cap_ms: int, size: int = 1024
) -> tuple[int, ...]:
    """``size`` equally likely quantiles of a lognormal duration: index with a uniform draw to sample fast.

    >>> table = lognormal_durations(1000, 0.5, floor_ms=1, cap_ms=10_000, size=4)
    >>> table[0] < 1000 < table[-1], len(table)
    (True, 4)
    """
    normal = NormalDist()
    return tuple(
        max(floor_ms, min(cap_ms, int(median_ms * math.exp(sigma * normal.inv_cdf((k + 0.5) / size)))))
        for k in range(size)
    )
