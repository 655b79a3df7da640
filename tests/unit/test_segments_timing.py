"""next_time_change against brute force: render the real view at every instant where anything could move
and find the first one where a value the rules read differs; the timer must be exactly that instant."""

from __future__ import annotations

import random
from typing import Any

import pytest

from profiles.config import DAY_MS, HOUR_MS
from profiles.segments.evaluate import context
from profiles.segments.fields import ROOT, Path
from profiles.segments.ops import read
from profiles.segments.rules import compile_rule
from profiles.segments.timing import next_time_change
from profiles.state import ProfileState
from profiles.timeutil import bucket_of
from profiles.view import render
from tests.unit.segments_support import CONFIG, T0, click, fold, order, random_profile

HORIZON_MS = 100 * DAY_MS
assert ROOT.fields is not None
# Everything a rule can read except affinity (continuous: re-evaluated hourly, tested on its own) and meta
# (its as_of moves every millisecond; rules cannot read it).
EVERYTHING: frozenset[Path] = frozenset((name,) for name in ROOT.fields if name not in {"affinity", "meta", "scores"})


def values(state: ProfileState, at_ms: int, reads: frozenset[Path]) -> list[Any]:
    root = context(render(state, at_ms, CONFIG), {})
    return [read(root, path) for path in sorted(reads)]


def first_change(state: ProfileState, as_of_ms: int, reads: frozenset[Path]) -> int | None:
    """The first instant after as_of at which any value in ``reads`` differs from its value at as_of.

    Windows move only 1 ms after whole hours, so every such tick is rendered; recency and lapsing move at
    other instants but only ever one way, so a difference found at a tick is bisected back to the
    millisecond it appeared.
    """
    base = values(state, as_of_ms, reads)
    previous = as_of_ms
    tick = bucket_of(as_of_ms) * HOUR_MS + 1
    while tick <= as_of_ms + HORIZON_MS:
        if values(state, tick, reads) != base:
            low, high = previous, tick
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (low, middle) if values(state, middle, reads) != base else (middle, high)
            return high
        previous, tick = tick, tick + HOUR_MS
    return None


def as_of_choices(state: ProfileState, rng: random.Random) -> list[int]:
    last = state.last_event_ms
    assert last is not None
    return [last, last + 1, last + rng.randint(0, 3 * DAY_MS), last + rng.randint(0, 70 * DAY_MS)]


RULES = (
    'windows["7d"].orders >= 1',
    'windows["1h"].clicks > 0 || windows["90d"].spend > 50.0',
    "rfm.recency_days > 20",
    'journey_stage == "decision"',
    "transactions.orders > 1",
)


@pytest.mark.parametrize("seed", range(6))
def test_the_timer_is_the_first_instant_anything_readable_changes(seed: int) -> None:
    rng = random.Random(seed)
    state = random_profile(rng)
    for as_of in as_of_choices(state, rng):
        expected = first_change(state, as_of, EVERYTHING)
        timer = next_time_change(state, as_of, CONFIG, EVERYTHING)
        if expected is None:
            assert timer is None or timer > as_of + HORIZON_MS
        else:
            assert timer == expected, (seed, as_of)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rule", RULES)
def test_the_timer_for_a_rule_is_the_first_change_of_what_it_reads(seed: int, rule: str) -> None:
    reads = compile_rule(rule).reads
    rng = random.Random(100 + seed)
    # Half of them never buy, so the journey goes through decision and consideration.
    state = random_profile(rng, span_days=rng.choice((2, 10, 40)), buyer=seed % 2 == 0)
    for as_of in as_of_choices(state, rng):
        expected = first_change(state, as_of, reads)
        timer = next_time_change(state, as_of, CONFIG, reads)
        if expected is None:
            assert timer is None or timer > as_of + HORIZON_MS
        else:
            assert timer == expected, (seed, as_of)


def test_a_rule_that_reads_nothing_time_dependent_sets_no_timer() -> None:
    state = fold(click(1, T0), order(2, T0))
    assert next_time_change(state, T0, CONFIG, compile_rule("transactions.orders > 1").reads) is None


def test_affinity_is_re_evaluated_at_the_next_window_tick_while_it_decays() -> None:
    state = fold(click(1, T0, category="shoes"))
    reads = compile_rule("affinity.shoes > 0.5").reads
    assert next_time_change(state, T0, CONFIG, reads) == bucket_of(T0) * HOUR_MS + 1
    tick = next_time_change(state, T0 + 5 * DAY_MS, CONFIG, reads)
    assert tick is not None
    assert 0 < tick - (T0 + 5 * DAY_MS) <= HOUR_MS
    assert render(state, tick, CONFIG)["affinity"]["shoes"] < render(state, T0, CONFIG)["affinity"]["shoes"]
    # A category the rule does not read decays without waking anyone.
    assert next_time_change(state, T0, CONFIG, compile_rule("affinity.books > 0.5").reads) is None


def test_a_silent_customer_leaves_active_7d_exactly_seven_days_after_the_hour_of_their_last_order() -> None:
    state = fold(order(1, T0))
    rule = compile_rule('windows["7d"].orders >= 1')
    timer = next_time_change(state, T0, CONFIG, rule.reads)
    assert timer == (bucket_of(T0) + 7 * 24 - 1) * HOUR_MS + 1
    assert render(state, timer - 1, CONFIG)["windows"]["7d"]["orders"] == 1
    assert render(state, timer, CONFIG)["windows"]["7d"]["orders"] == 0


def test_a_visitor_who_never_buys_moves_from_decision_to_consideration_to_awareness_to_lapsed() -> None:
    state = fold(click(1, T0 - 10 * DAY_MS, "product_view"), click(2, T0, "add_to_cart"))
    reads = compile_rule('journey_stage == "decision"').reads
    stages = []
    at: int | None = T0
    while at is not None:
        stages.append((render(state, at, CONFIG)["journey_stage"], at))
        at = next_time_change(state, at, CONFIG, reads)
    assert [stage for stage, _ in stages] == ["decision", "consideration", "awareness", "lapsed"]
    assert stages[1][1] == (bucket_of(T0) + 7 * 24 - 1) * HOUR_MS + 1
    assert stages[2][1] == (bucket_of(T0 - 10 * DAY_MS) + 30 * 24 - 1) * HOUR_MS + 1
    assert stages[3][1] == T0 + 60 * DAY_MS + 1


def test_a_score_rule_is_re_evaluated_when_any_feature_window_ticks_and_at_least_daily() -> None:
    from profiles.features import features  # noqa: PLC0415 - only this test needs the models' features

    state = fold(click(1, T0, "search"))  # searches: not a window of the view, but a feature of the models
    reads = compile_rule("scores.churn_risk > 0.5").reads
    timer = next_time_change(state, T0, CONFIG, reads)
    assert timer == bucket_of(T0) * HOUR_MS + 1  # the click leaves the 1h window
    # the first feature change: features() changes exactly there (24h window of searches), never earlier
    later = next_time_change(state, (bucket_of(T0) + 23) * HOUR_MS, CONFIG, reads)
    assert later == (bucket_of(T0) + 23) * HOUR_MS + 1
    assert features(state, later - 1, CONFIG)["w24h_searches"] > 0
    assert features(state, later, CONFIG)["w24h_searches"] == 0
    quiet = 200 * DAY_MS + T0  # every window empty: recencies still move, so once a day
    assert next_time_change(state, quiet, CONFIG, reads) == quiet + DAY_MS
    assert next_time_change(state, quiet, CONFIG, compile_rule("transactions.orders > 1").reads) is None
