"""RFM: recency, frequency and monetary value, scored 1-5 against the population of buyers."""

from __future__ import annotations

from dataclasses import dataclass

from profiles.config import DAY_MS


@dataclass(frozen=True, slots=True)
class RfmScores:
    """The 1-5 quintile scores of a buyer."""

    recency: int
    frequency: int
    monetary: int


@dataclass(frozen=True, slots=True)
class RfmRanks:
    """Where a buyer stands: how many buyers there are, and how many are strictly worse on each dimension."""

    buyers: int
    worse_recency: int  # buyers whose last purchase is older
    worse_frequency: int  # buyers with fewer orders
    worse_monetary: int  # buyers with a lower net spend

    def scores(self) -> RfmScores | None:
        if self.buyers == 0:
            return None
        return RfmScores(
            score(self.worse_recency, self.buyers),
            score(self.worse_frequency, self.buyers),
            score(self.worse_monetary, self.buyers),
        )


def threshold_ranks(buyers: int) -> list[int]:
    """The 0-based ranks (ascending) whose values decide every quintile score among ``buyers``.

    A buyer scores above ``s`` exactly when at least ``ceil(s × buyers / 5)`` buyers are strictly worse,
    i.e. when the value at rank ``ceil(s × buyers / 5) - 1`` is strictly below theirs.

    >>> threshold_ranks(10), threshold_ranks(3), threshold_ranks(0)
    ([1, 3, 5, 7], [0, 1, 1, 2], [])
    """
    return [-(-s * buyers // 5) - 1 for s in range(1, 5)] if buyers else []


@dataclass(frozen=True, slots=True)
class RfmThresholds:
    """The population reduced to what quintile scores need: the values at ``threshold_ranks`` per
    dimension. Scores from it equal ``RfmRanks.scores()`` against the same population.

    >>> population = [(t, t % 3, 100 * t) for t in range(10)]  # (last purchase, orders, net cents)
    >>> ranked = [sorted(p[d] for p in population) for d in range(3)]
    >>> limits = RfmThresholds(10, *([column[r] for r in threshold_ranks(10)] for column in ranked))
    >>> exact = RfmRanks(10, *(sum(v < mine for v in column) for column, mine in zip(ranked, (7, 1, 700))))
    >>> limits.scores((7, 1, 700)) == exact.scores()
    True
    """

    buyers: int
    recency: list[int]
    frequency: list[int]
    monetary: list[int]

    def scores(self, position: tuple[int, int, int]) -> RfmScores | None:
        """Scores of a buyer at ``position`` = (last purchase ms, orders, net cents)."""
        if self.buyers == 0:
            return None
        last_purchase, orders, net = position
        return RfmScores(
            1 + sum(t < last_purchase for t in self.recency),
            1 + sum(t < orders for t in self.frequency),
            1 + sum(t < net for t in self.monetary),
        )


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
