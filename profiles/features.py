"""The model features of a profile at an ``as_of`` instant: one flat ``{name: float}`` map. Pure.

The same function feeds the prediction snapshots the models learn from and the scores served on read, so
a model never sees features computed one way in training and another in serving. Every feature is a
function of the state and ``as_of`` only (no clock, no population) and the map always has the same keys in
the same order, whatever the profile holds: River's linear models treat a missing key as zero, which
would silently mean something else for a feature like ``days_since_last_seen``.

Counts and amounts are heavy-tailed (a few customers order a hundred times), so they enter as
``log1p``; durations are in days, capped at ``DAY_CAP`` so that "never" has a finite, large value and a
``has_*`` flag says which it is.
"""

from __future__ import annotations

import math
from typing import Final

from profiles.config import DAY_MS, FoldConfig
from profiles.journey import Stage
from profiles.rfm import RfmRanks, score
from profiles.state import (
    EMAIL_ACTION_INDEX,
    W_SPEND,
    WINDOW_METRICS,
    ProfileState,
)
from profiles.timeutil import from_ms
from profiles.view import stage_of, window_counters

#: Durations longer than this (and "never") are this many days.
DAY_CAP: Final = 365.0
# The prior of a customer's activity rate: half an event over one day (a median visitor's pace).
_PRIOR_EVENTS: Final = 0.5
_PRIOR_DAYS: Final = 1.0
#: The windows used as features: the 1h window is too short to say anything about days ahead.
FEATURE_WINDOWS: Final = ("24h", "7d", "30d", "90d")
#: The shown window metrics plus the two hidden ones (checkouts, searches) the journey stage uses.
WINDOW_FEATURES: Final = (*WINDOW_METRICS, "checkouts", "searches")

_DELIVERED = EMAIL_ACTION_INDEX["delivered"]
_OPENED = EMAIL_ACTION_INDEX["opened"]
_CLICKED = EMAIL_ACTION_INDEX["clicked"]
_UNSUBSCRIBED = EMAIL_ACTION_INDEX["unsubscribed"]


class FeaturesBeforeLastEventError(ValueError):
    """Features at an instant before the profile's latest event would include what happened after it."""

    def __init__(self, as_of_ms: int, last_event_ms: int) -> None:
        super().__init__(f"as_of {as_of_ms} is before the profile's last event {last_event_ms}")
        self.as_of_ms = as_of_ms
        self.last_event_ms = last_event_ms


def _days_since(ms: int | None, as_of_ms: int) -> float:
    return DAY_CAP if ms is None else min(DAY_CAP, (as_of_ms - ms) / DAY_MS)


def _log_amount(cents: int) -> float:
    """``log1p`` of a base-currency amount in major units, floored at zero (net amounts can be negative)."""
    return math.log1p(max(0, cents) / 100)


def _rate(numerator: int, denominator: int) -> float:
    """A rate clamped to [0, 1]: repeated opens can count more opens than deliveries."""
    return min(1.0, numerator / denominator) if denominator else 0.0


def features(state: ProfileState, as_of_ms: int, config: FoldConfig, rfm: RfmRanks | None = None) -> dict[str, float]:
    """The model features of ``state`` at ``as_of_ms`` (at or after the profile's latest event).

    ``rfm`` adds the buyer's 1-5 R/F/M scores (0 for non-buyers). They rank the customer against the
    live population, which a replay does not reproduce at the same instants, so the model specs are
    trained and served without them (``docs/models.md``).

    >>> from profiles.state import new_profile
    >>> f = features(new_profile("c-1", "c-1"), 0, FoldConfig())
    >>> f["days_since_last_seen"], f["has_purchased"], f["stage_awareness"], f["w7d_orders"]
    (365.0, 0.0, 1.0, 0.0)
    >>> len(f)
    69
    """
    if state.last_event_ms is not None and as_of_ms < state.last_event_ms:
        raise FeaturesBeforeLastEventError(as_of_ms, state.last_event_ms)
    windows = window_counters(state, as_of_ms)
    emails = state.email_actions
    delivered = emails[_DELIVERED]
    out: dict[str, float] = {
        "days_since_last_seen": _days_since(state.last_seen_ms, as_of_ms),
        "days_since_first_seen": _days_since(state.first_seen_ms, as_of_ms),
        "has_purchased": 1.0 if state.orders else 0.0,
        "days_since_last_purchase": _days_since(state.last_purchase_ms, as_of_ms),
        "frequency": math.log1p(state.orders),
        "monetary": _log_amount(state.gross_cents - state.refunded_cents),
        "aov": _log_amount(state.gross_cents // state.orders) if state.orders else 0.0,
        "refund_share": state.refunds / state.orders if state.orders else 0.0,
        "sessions": math.log1p(state.sessions),
        "email_delivered": math.log1p(delivered),
        "email_open_rate": _rate(emails[_OPENED], delivered),
        "email_click_rate": _rate(emails[_CLICKED], delivered),
        "email_unsubscribed": 1.0 if emails[_UNSUBSCRIBED] else 0.0,
        "days_since_last_open": _days_since(state.last_open_ms, as_of_ms),
        "mentions": math.log1p(state.mentions),
        "sentiment_mean": state.sentiment_sum / state.mentions / 10_000 if state.mentions else 0.0,
        "sentiment_last": state.last_sentiment / 10_000 if state.mentions else 0.0,
        "negative_share": state.negative_mentions / state.mentions if state.mentions else 0.0,
        "top_affinity": math.log1p(_top_affinity(state, as_of_ms, config)),
    }
    rate = _activity_rate(state)
    out["activity_rate"] = math.log(rate)
    out["silence_surprise"] = min(DAY_CAP, rate * out["days_since_last_seen"])
    out["log_days_since_last_seen"] = math.log1p(out["days_since_last_seen"])
    for name in FEATURE_WINDOWS:
        sums = windows[name]
        for i, metric in enumerate(WINDOW_FEATURES):
            out[f"w{name}_{metric}"] = _log_amount(sums[i]) if i == W_SPEND else math.log1p(sums[i])
    stage = stage_of(state, windows, as_of_ms, config)
    for each in Stage:
        out[f"stage_{each.value}"] = 1.0 if each is stage else 0.0
    age = _age_years(state, as_of_ms)
    out["has_age"] = 0.0 if age is None else 1.0
    out["age_years"] = 0.0 if age is None else age
    if rfm is not None:
        buyer = state.orders > 0 and rfm.buyers > 0
        out["r_score"] = float(score(rfm.worse_recency, rfm.buyers)) if buyer else 0.0
        out["f_score"] = float(score(rfm.worse_frequency, rfm.buyers)) if buyer else 0.0
        out["m_score"] = float(score(rfm.worse_monetary, rfm.buyers)) if buyer else 0.0
    return out


def _activity_rate(state: ProfileState) -> float:
    """Visits, email opens and mentions per day between the first and the last time the customer was seen,
    shrunk towards half an event a day for short histories (one event is no rate).

    ``rate × days since last seen`` is how many of them a customer still active would have made during the
    silence: large when a frequent visitor goes quiet, small when an occasional one does — the recency-and-
    frequency view of "is this customer still alive" (as in the Pareto/NBD and BG/NBD models), which a
    linear model cannot form from recency and frequency alone.

    >>> from profiles.state import new_profile
    >>> _activity_rate(new_profile("c-1", "c-1"))
    0.5
    """
    if state.first_seen_ms is None or state.last_seen_ms is None:
        return _PRIOR_EVENTS / _PRIOR_DAYS
    span_days = (state.last_seen_ms - state.first_seen_ms) / DAY_MS
    events = state.sessions + state.email_actions[_OPENED] + state.mentions
    return (events + _PRIOR_EVENTS) / (span_days + _PRIOR_DAYS)


def _top_affinity(state: ProfileState, as_of_ms: int, config: FoldConfig) -> float:
    if not state.affinity or state.affinity_ref_ms is None:
        return 0.0
    # float ** float is typed Any (a negative base could give a complex); the base here is 2.
    decay: float = 2.0 ** (-(as_of_ms - state.affinity_ref_ms) / config.affinity_half_life_ms)
    return max(state.affinity.values()) * decay


def _age_years(state: ProfileState, as_of_ms: int) -> float | None:
    """Age from the ``birth_year`` trait, the only numeric trait; implausible values count as unknown."""
    trait = state.traits.get("birth_year")
    if trait is None or not isinstance(trait.value, int) or isinstance(trait.value, bool):
        return None
    age = from_ms(as_of_ms).year - trait.value
    return float(age) if 0 <= age <= 120 else None
