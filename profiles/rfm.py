"""RFM: recency, frequency and monetary value, scored 1-5 against the population of buyers."""

from __future__ import annotations

from dataclasses import dataclass

from profiles.config import DAY_MS


@dataclass(frozen=True, slots=True)
class RfmRanks:
    """Where a buyer stands: how many buyers there are, and how many are strictly worse on each dimension."""

    buyers: int
    worse_recency: int  # buyers whose last purchase is older
    worse_frequency: int  # buyers with fewer orders
    worse_monetary: int  # buyers with a lower net spend


def score(worse: int, buyers: int) -> int:
    """Quintile score: ``1 + floor(5 × worse / buyers)``, capped at 5; ties share a score.

    >>> [score(w, 10) for w in range(10)]
    [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    >>> score(0, 1)
    1
    """
    return min(5, 1 + (5 * worse) // buyers)


def recency_days(last_purchase_ms: int, as_of_ms: int) -> int:
    """Whole days since the last purchase.

    >>> recency_days(0, DAY_MS - 1), recency_days(0, DAY_MS)
    (0, 1)
    """
    return (as_of_ms - last_purchase_ms) // DAY_MS
