"""VADER compound sentiment of mention texts, in VADER's own 4-decimal resolution as integers."""

from __future__ import annotations

from functools import cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

#: VADER's convention: a compound score at or below this is negative.
NEGATIVE_AT_OR_BELOW = -500  # -0.05 in 1e-4 units


@cache
def _analyzer() -> SentimentIntensityAnalyzer:
    # Built on first use (it reads its lexicon from the package), then shared.
    return SentimentIntensityAnalyzer()


def compound_units(text: str) -> int:
    """VADER's compound score × 10,000 (VADER rounds it to 4 decimals, so this is exact).

    >>> compound_units("I love this shop, great service!") > 0, compound_units("Terrible, awful delivery.") < 0
    (True, True)
    """
    compound: float = _analyzer().polarity_scores(text)["compound"]
    return round(compound * 10_000)
