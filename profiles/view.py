"""Rendering a profile state as the documented JSON view at an ``as_of`` instant. Pure."""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Final

from profiles.config import WINDOWS, FoldConfig
from profiles.journey import Stage, journey_stage
from profiles.money import div_round
from profiles.rfm import RfmScores, recency_days
from profiles.state import (
    BUCKET_WIDTH,
    CLICK_ACTION_INDEX,
    EMAIL_ACTION_INDEX,
    STATE_VERSION,
    W_ADD_TO_CARTS,
    W_CHECKOUTS,
    W_EMAIL_CLICKS,
    W_PRODUCT_VIEWS,
    W_SEARCHES,
    W_SPEND,
    WINDOW_METRICS,
    ProfileState,
)
from profiles.timeutil import bucket_of, iso

_WINDOW_HOURS: Final = tuple(WINDOWS.values())  # ascending: the windows nest
_LONGEST: Final = _WINDOW_HOURS[-1]


def _money(cents: int) -> float:
    return round(cents / 100, 2)


def _ratio(numerator: int, denominator: int) -> float | None:
    """A rate to 4 decimals, the exact value rounded half away from zero."""
    return div_round(numerator * 10_000, denominator) / 10_000 if denominator else None


def window_counters(state: ProfileState, as_of_ms: int) -> dict[str, list[int]]:
    """Per window, the summed bucket counters (hidden journey counters included).

    The windows are nested (1h within 24h within 7d ...): each bucket is added once, to the shortest window
    holding it, and each window is the running sum of those up to it. Column sums run in C (``map(sum,
    zip(...))``): this is on every profile read, score and model snapshot, and a heavy profile holds up to
    2,160 hourly buckets.

    >>> from profiles.state import new_profile
    >>> s = new_profile("c-1", "c-1")
    >>> s.buckets = {10: [1] + [0] * 9, 9: [2] + [0] * 9, 10 - 30: [4] + [0] * 9}
    >>> {name: sums[0] for name, sums in window_counters(s, 10 * 3_600_000).items()}
    {'1h': 1, '24h': 3, '7d': 7, '30d': 7, '90d': 7}
    """
    now = bucket_of(as_of_ms)
    by_window: list[list[list[int]]] = [[] for _ in _WINDOW_HOURS]
    for bucket, counters in state.buckets.items():
        age = now - bucket  # 0 for the bucket holding as_of
        if 0 <= age < _LONGEST:
            by_window[bisect_right(_WINDOW_HOURS, age)].append(counters)
    sums: dict[str, list[int]] = {}
    running = [0] * BUCKET_WIDTH
    for name, group in zip(WINDOWS, by_window, strict=True):
        if group:
            running = list(map(sum, zip(running, *group, strict=True)))
        sums[name] = list(running)
    return sums


def stage_of(state: ProfileState, windows: dict[str, list[int]], as_of_ms: int, config: FoldConfig) -> Stage:
    """The journey stage at ``as_of_ms``, given the profile's ``window_counters`` at that instant."""
    return journey_stage(
        last_seen_ms=state.last_seen_ms,
        orders=state.orders,
        carts_or_checkouts_7d=windows["7d"][W_ADD_TO_CARTS] + windows["7d"][W_CHECKOUTS],
        interest_30d=windows["30d"][W_PRODUCT_VIEWS] + windows["30d"][W_SEARCHES] + windows["30d"][W_EMAIL_CLICKS],
        as_of_ms=as_of_ms,
        lapsed_after_days=config.lapsed_after_days,
    )


def render(
    state: ProfileState,
    as_of_ms: int,
    config: FoldConfig,
    *,
    rfm: RfmScores | None = None,
    watermark: int | None = None,
) -> dict[str, Any]:
    """The profile as ``docs/profile.md`` defines it, at ``as_of_ms`` (≥ the latest event).

    ``watermark`` is the applied offset of the profile's ``events.resolved`` partition, stored beside
    the state.
    """
    windows = window_counters(state, as_of_ms)
    spend = state.gross_cents - state.refunded_cents
    delivered = state.email_actions[EMAIL_ACTION_INDEX["delivered"]]
    half_life = config.affinity_half_life_ms
    decay = 2.0 ** (-(as_of_ms - state.affinity_ref_ms) / half_life) if state.affinity_ref_ms is not None else 1.0
    stage = stage_of(state, windows, as_of_ms, config)
    return {
        "profile_id": state.profile_id,
        "customer_id": state.customer_id,
        "anonymous_ids": list(state.anonymous_ids),
        "emails": list(state.emails),
        "merged_from": [
            {"anonymous_id": m.anonymous_id, "at": iso(m.at_ms), "event_id": m.event_id} for m in state.merged_from
        ],
        "identity_conflicts": [
            {
                "anonymous_id": c.anonymous_id,
                "claimed_by": c.claimed_by,
                "at": iso(c.at_ms),
                "event_id": c.event_id,
                "attempts": c.attempts,
            }
            for c in state.conflicts
        ],
        "links_refused": {"anonymous_ids": state.links_refused, "emails": state.emails_refused},
        "traits": {
            name: {"value": t.value, "updated_at": iso(t.updated_ms)} for name, t in sorted(state.traits.items())
        },
        "behaviour": {
            "clicks": dict(zip(CLICK_ACTION_INDEX, state.clicks, strict=True)),
            "sessions": state.sessions,
            "first_seen": iso(state.first_seen_ms),
            "last_seen": iso(state.last_seen_ms),
        },
        "transactions": {
            "orders": state.orders,
            "refunds": state.refunds,
            "gross_spend": _money(state.gross_cents),
            "refunded": _money(state.refunded_cents),
            "spend": _money(spend),
            "aov": _money(div_round(state.gross_cents, state.orders)) if state.orders else None,
            "first_purchase_at": iso(state.first_purchase_ms),
            "last_purchase_at": iso(state.last_purchase_ms),
            "items": state.items,
            "spend_by_category": {c: _money(v) for c, v in sorted(state.category_cents.items())},
        },
        "rfm": _rfm(state, as_of_ms, spend, rfm),
        "email": {
            "actions": dict(zip(EMAIL_ACTION_INDEX, state.email_actions, strict=True)),
            "open_rate": _ratio(state.email_actions[EMAIL_ACTION_INDEX["opened"]], delivered),
            "click_through_rate": _ratio(state.email_actions[EMAIL_ACTION_INDEX["clicked"]], delivered),
            "last_open_at": iso(state.last_open_ms),
        },
        "social": {
            "mentions": state.mentions,
            "sentiment_mean": div_round(state.sentiment_sum, state.mentions) / 10_000 if state.mentions else None,
            "sentiment_last": state.last_sentiment / 10_000 if state.mentions else None,
            "negative_mentions": state.negative_mentions,
        },
        "affinity": {c: s * decay for c, s in sorted(state.affinity.items())},
        "journey_stage": stage.value,
        "windows": {
            name: {metric: (_money(sums[i]) if i == W_SPEND else sums[i]) for i, metric in enumerate(WINDOW_METRICS)}
            for name, sums in windows.items()
        },
        "meta": {
            "events_applied": state.events_applied,
            "last_event_at": iso(state.last_event_ms),
            "updated_at": iso(state.updated_ms),
            "watermark": watermark,
            "schema_version": STATE_VERSION,
            "as_of": iso(as_of_ms),
        },
    }


def _rfm(state: ProfileState, as_of_ms: int, spend: int, scores: RfmScores | None) -> dict[str, Any] | None:
    if state.orders == 0 or state.last_purchase_ms is None:
        return None
    return {
        "recency_days": recency_days(state.last_purchase_ms, as_of_ms),
        "frequency": state.orders,
        "monetary": _money(spend),
        "r_score": scores.recency if scores else None,
        "f_score": scores.frequency if scores else None,
        "m_score": scores.monetary if scores else None,
    }
