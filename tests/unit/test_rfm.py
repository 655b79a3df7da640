"""RFM scores from the population's thresholds (what the API serves) equal the exact ranks' scores."""

from __future__ import annotations

import random

from profiles.rfm import RfmRanks, RfmThresholds, threshold_ranks


def test_threshold_scores_equal_exact_scores_on_random_populations_with_ties() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        buyers = rng.randint(1, 40)
        population = [(rng.randint(0, 9), rng.randint(1, 4), rng.randint(-50, 500)) for _ in range(buyers)]
        columns = [sorted(p[d] for p in population) for d in range(3)]
        thresholds = RfmThresholds(buyers, *([c[r] for r in threshold_ranks(buyers)] for c in columns))
        for member in population:
            exact = RfmRanks(buyers, *(sum(v < mine for v in c) for c, mine in zip(columns, member, strict=True)))
            assert thresholds.scores(member) == exact.scores(), (population, member)


def test_an_empty_population_scores_nobody() -> None:
    assert RfmThresholds(0, [], [], []).scores((1, 1, 1)) is None
    assert RfmRanks(0, 0, 0, 0).scores() is None
