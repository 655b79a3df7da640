"""Social-mention texts around the brand, from templates with a known polarity.

Templates mix strong, mild and hedged wording so that VADER's compound score spreads over the whole
range: positives mostly above +0.3, negatives mostly below -0.3, neutrals (including mixed "good but …"
remarks) near zero. A mention's polarity is drawn from the customer's sentiment tendency ``s`` in [-1, 1]:
``P(positive) ∝ exp(2s)``, ``P(negative) ∝ exp(-2s)``, ``P(neutral) ∝ 1``.
"""

from __future__ import annotations

import math
import random
from typing import Final

from services.simulator.catalogue import BRAND, SEARCH_TERMS

POSITIVE: Final[tuple[str, ...]] = (
    "Absolutely love the {thing} I got from {brand}! Fast delivery and great quality 😍",
    "{brand} never disappoints. The {thing} is perfect, thank you!",
    "Great service from {brand} today, the support team was super helpful with my {thing} order.",
    "So happy with my new {thing} from {brand}. Highly recommend!",
    "Best online shop I've used this year: {brand}. Amazing prices on {thing}.",
    "Shoutout to {brand} for the quick refund and friendly help. Awesome experience.",
    "Really nice {thing}, good value. {brand} is my go-to now.",
    "Pleasantly surprised by {brand}, the {thing} arrived early and works well.",
    "{brand} has the coolest {thing} selection, I'm impressed.",
    "Good stuff from {brand} again 👍",
)
NEGATIVE: Final[tuple[str, ...]] = (
    "Worst experience ever with {brand}. My {thing} arrived broken and support never answered.",
    "{brand} is a scam?? Still waiting for my refund on the {thing}. Terrible.",
    "Really disappointed with {brand}, the {thing} looks nothing like the photos.",
    "Never ordering from {brand} again. Late delivery, rude support, awful packaging.",
    "The {thing} from {brand} stopped working after a week. Not happy.",
    "Ugh, {brand} cancelled my order for the {thing} without telling me. Frustrating.",
    "Overpriced and poor quality. Really bad {thing} from {brand}.",
    "{brand} charged me twice for one {thing}. This is unacceptable 😡",
    "Hate the new {brand} website, can't even find the {thing} section anymore.",
    "Meh, {brand} shipping was slow again and the {thing} was damaged.",
)
NEUTRAL: Final[tuple[str, ...]] = (
    "Just ordered a {thing} from {brand}, let's see how it goes.",
    "Anyone tried the {thing} from {brand}?",
    "{brand} has a sale on {thing} this week.",
    "Comparing {thing} prices between {brand} and a couple of other shops.",
    "Picked up my {thing} order from {brand} at the parcel locker.",
    "The {thing} from {brand} is good but shipping took a while.",
    "{brand} delivery was late, but the {thing} itself is fine.",
    "Does {brand} ship {thing} to Ireland?",
    "Returned a {thing} to {brand}, the process was okay I guess.",
    "Browsing {brand} for a new {thing}.",
)

BY_POLARITY: Final[dict[str, tuple[str, ...]]] = {
    "positive": POSITIVE,
    "negative": NEGATIVE,
    "neutral": NEUTRAL,
}


def polarity_probabilities(sentiment: float) -> tuple[float, float, float]:
    """(P(positive), P(negative), P(neutral)) for a sentiment tendency in [-1, 1].

    >>> [round(p, 3) for p in polarity_probabilities(0.0)]
    [0.333, 0.333, 0.333]
    """
    pos, neg = math.exp(2 * sentiment), math.exp(-2 * sentiment)
    total = pos + neg + 1.0
    return pos / total, neg / total, 1.0 / total


def mention_text(rng: random.Random, sentiment: float, category: int) -> tuple[str, str]:
    """A (polarity, text) pair for a customer with the given tendency, about a product of ``category``."""
    p_pos, p_neg, _ = polarity_probabilities(sentiment)
    u = rng.random()
    polarity = "positive" if u < p_pos else "negative" if u < p_pos + p_neg else "neutral"
    templates = BY_POLARITY[polarity]
    terms = SEARCH_TERMS[category]
    text = templates[rng.randrange(len(templates))].format(brand=BRAND, thing=terms[rng.randrange(len(terms))])
    return polarity, text
