"""``window_counters`` (one pass over nested windows) against the windows' definition, window by window."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from profiles.config import WINDOWS
from profiles.state import BUCKET_WIDTH, new_profile
from profiles.timeutil import bucket_of
from profiles.view import window_counters

HOUR_MS = 3_600_000


def by_definition(buckets: dict[int, list[int]], as_of_ms: int) -> dict[str, list[int]]:
    """Per window of ``hours``, the column sums of the buckets whose age (hours before as_of's bucket) is
    in ``[0, hours)``."""
    now = bucket_of(as_of_ms)
    return {
        name: [sum(c[i] for b, c in buckets.items() if 0 <= now - b < hours) for i in range(BUCKET_WIDTH)]
        for name, hours in WINDOWS.items()
    }


@settings(max_examples=300, deadline=None)
@given(
    ages=st.dictionaries(
        st.integers(min_value=-5, max_value=2_400),
        st.lists(st.integers(min_value=0, max_value=50), min_size=BUCKET_WIDTH, max_size=BUCKET_WIDTH),
        max_size=60,
    ),
    offset_ms=st.integers(min_value=-HOUR_MS, max_value=200 * HOUR_MS),
)
def test_window_counters_follow_the_definition(ages: dict[int, list[int]], offset_ms: int) -> None:
    base = 500_000
    state = new_profile("c-1", "c-1")
    state.buckets = {base - age: counters for age, counters in ages.items()}
    as_of = base * HOUR_MS + offset_ms
    assert window_counters(state, as_of) == by_definition(state.buckets, as_of)
