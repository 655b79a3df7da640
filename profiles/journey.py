"""Journey stage at ``as_of``: where the customer is between first visit and loyal (or lost) buyer."""

from __future__ import annotations

from enum import StrEnum

from profiles.config import DAY_MS


class Stage(StrEnum):
    AWARENESS = "awareness"
    CONSIDERATION = "consideration"
    DECISION = "decision"
    RETENTION = "retention"
    LAPSED = "lapsed"


def journey_stage(
    *,
    last_seen_ms: int | None,
    orders: int,
    carts_or_checkouts_7d: int,
    interest_30d: int,
    as_of_ms: int,
    lapsed_after_days: int,
) -> Stage:
    """The first rule that matches, in the order documented in ``docs/profile.md``.

    >>> journey_stage(last_seen_ms=0, orders=3, carts_or_checkouts_7d=0, interest_30d=0,
    ...               as_of_ms=61 * DAY_MS, lapsed_after_days=60).value
    'lapsed'
    >>> journey_stage(last_seen_ms=0, orders=0, carts_or_checkouts_7d=1, interest_30d=5,
    ...               as_of_ms=DAY_MS, lapsed_after_days=60).value
    'decision'
    """
    if last_seen_ms is not None and as_of_ms - last_seen_ms > lapsed_after_days * DAY_MS:
        return Stage.LAPSED
    if orders > 0:
        return Stage.RETENTION
    if carts_or_checkouts_7d > 0:
        return Stage.DECISION
    if interest_30d > 0:
        return Stage.CONSIDERATION
    return Stage.AWARENESS
