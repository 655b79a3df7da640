"""When a profile's view changes with no new event: the instant the owning worker sets its timer to.

Between events, four things in the view move with ``as_of`` (see ``docs/profile.md``):

- **windows**: an hourly bucket leaves a window of *H* hours when ``bucket_of(as_of)`` reaches ``b + H``,
  i.e. at ``(b + H − 1) h + 1 ms`` (bucket *b* covers ``((b−1) h, b h]``, so windows tick 1 ms after each
  whole hour);
- **rfm.recency_days**: at each whole day after the last purchase;
- **journey_stage**: when the customer lapses (``last_seen`` + 60 days + 1 ms), or when the last cart (7d)
  or the last sign of interest (30d) leaves its window — whichever the first-match rules make visible;
- **affinity** decays continuously. Rather than a timer per threshold, a rule reading affinity is
  re-evaluated at the next window tick (at most an hour late), while the score is non-zero;
- **scores** are functions of features that include every window counter and recencies in days: a rule
  reading a score is re-evaluated at the next window tick of any counter, and at least once a day (a
  trained model's score can follow a recency at most a day late; the cold-start heuristics read windows
  only, so they are exact).

``reads`` narrows the answer to the fields some rules read (``CompiledRule.reads``): a profile whose
segments read only ``windows["7d"].orders`` needs no timer for its clicks leaving the 1h window.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from functools import lru_cache

from profiles.config import DAY_MS, HOUR_MS, WINDOWS, FoldConfig
from profiles.segments.fields import Path
from profiles.state import (
    BUCKET_WIDTH,
    W_ADD_TO_CARTS,
    W_CHECKOUTS,
    W_EMAIL_CLICKS,
    W_PRODUCT_VIEWS,
    W_SEARCHES,
    WINDOW_METRICS,
    ProfileState,
)
from profiles.timeutil import bucket_of

_CARTS = (W_ADD_TO_CARTS, W_CHECKOUTS)
_INTEREST = (W_PRODUCT_VIEWS, W_SEARCHES, W_EMAIL_CLICKS)


def next_time_change(
    state: ProfileState, as_of_ms: int, config: FoldConfig, reads: Collection[Path] | None = None
) -> int | None:
    """The earliest instant after ``as_of_ms`` (≥ the latest event) at which a value in ``reads`` (default:
    the whole view) can change without a new event; None if none ever will.

    >>> from profiles.state import new_profile
    >>> state = new_profile("c-1", "c-1")
    >>> state.buckets[10] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # a click in bucket 10, i.e. (9 h, 10 h]
    >>> next_time_change(state, 10 * HOUR_MS, FoldConfig(), [("windows", "1h", "clicks")]) == 10 * HOUR_MS + 1
    True
    >>> next_time_change(state, 10 * HOUR_MS, FoldConfig(), [("windows", "24h", "clicks")]) == 33 * HOUR_MS + 1
    True
    >>> next_time_change(state, 10 * HOUR_MS, FoldConfig(), [("windows", "24h", "orders")]) is None
    True
    """
    candidates = [
        *_windows(state, as_of_ms, reads),
        _recency(state, as_of_ms) if _reads(reads, ("rfm", "recency_days")) else None,
        _journey(state, as_of_ms, config) if _reads(reads, ("journey_stage",)) else None,
        _affinity(state, as_of_ms, reads),
        # not part of the view: only when a rule reads them
        _scores(state, as_of_ms) if reads is not None and _reads(reads, ("scores",)) else None,
    ]
    return min((c for c in candidates if c is not None), default=None)


def _reads(reads: Collection[Path] | None, path: Path) -> bool:
    """Whether ``reads`` covers ``path``: it reads the field, something inside it, or something holding it.

    >>> _reads([("windows", "7d", "orders")], ("windows", "7d")), _reads([("windows",)], ("windows", "1h", "clicks"))
    (True, True)
    >>> _reads([("windows", "7d", "orders")], ("windows", "7d", "clicks"))
    False
    """
    if reads is None:
        return True
    exact, inside = _coverage(reads if isinstance(reads, frozenset) else frozenset(reads))
    return path in inside or any(path[:i] in exact for i in range(1, len(path) + 1))


@lru_cache(maxsize=256)
def _coverage(reads: frozenset[Path]) -> tuple[frozenset[Path], frozenset[Path]]:
    """The paths read, and every path holding one of them: computed once per set of live rules, not per
    profile and window (it was most of an evaluation's cost with 100 segments)."""
    return reads, frozenset(r[:i] for r in reads for i in range(1, len(r) + 1))


def _exit(bucket: int, hours: int) -> int:
    """When ``bucket`` leaves a window of ``hours``: the first instant whose bucket is ``bucket + hours``."""
    return (bucket + hours - 1) * HOUR_MS + 1


def _in_window(state: ProfileState, as_of_ms: int, hours: int, counters: Iterable[int]) -> list[int]:
    """The buckets inside the window with a non-zero count among ``counters``."""
    now = bucket_of(as_of_ms)
    wanted = tuple(counters)
    return [b for b, c in state.buckets.items() if 0 <= now - b < hours and any(c[i] for i in wanted)]


def _windows(state: ProfileState, as_of_ms: int, reads: Collection[Path] | None) -> list[int | None]:
    out: list[int | None] = []
    for name, hours in WINDOWS.items():
        metrics = [i for i, metric in enumerate(WINDOW_METRICS) if _reads(reads, ("windows", name, metric))]
        if metrics:
            buckets = _in_window(state, as_of_ms, hours, metrics)
            out.append(_exit(min(buckets), hours) if buckets else None)
    return out


def _recency(state: ProfileState, as_of_ms: int) -> int | None:
    if state.orders == 0 or state.last_purchase_ms is None:
        return None  # no RFM at all
    days = (as_of_ms - state.last_purchase_ms) // DAY_MS
    return state.last_purchase_ms + (days + 1) * DAY_MS


def _journey(state: ProfileState, as_of_ms: int, config: FoldConfig) -> int | None:
    """The stage's next change, following the first-match rules of ``profiles.journey``."""
    lapse = state.last_seen_ms + config.lapsed_after_days * DAY_MS + 1 if state.last_seen_ms is not None else None
    if lapse is not None and as_of_ms >= lapse:
        return None  # lapsed stays lapsed until the customer comes back
    if state.orders == 0:
        for hours, counters in ((WINDOWS["7d"], _CARTS), (WINDOWS["30d"], _INTEREST)):
            buckets = _in_window(state, as_of_ms, hours, counters)
            if buckets:  # decision (or consideration) holds until its last such bucket leaves
                leaves = _exit(max(buckets), hours)
                return leaves if lapse is None else min(leaves, lapse)
    return lapse


def _affinity(state: ProfileState, as_of_ms: int, reads: Collection[Path] | None) -> int | None:
    decaying = [c for c, score in state.affinity.items() if score and _reads(reads, ("affinity", c))]
    return bucket_of(as_of_ms) * HOUR_MS + 1 if decaying else None


def _scores(state: ProfileState, as_of_ms: int) -> int:
    every_counter = range(BUCKET_WIDTH)
    ticks = [
        _exit(min(b), hours) for hours in WINDOWS.values() if (b := _in_window(state, as_of_ms, hours, every_counter))
    ]
    return min([*ticks, as_of_ms + DAY_MS])
