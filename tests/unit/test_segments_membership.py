"""Re-evaluating a profile: changes are exactly the difference between memberships computed from scratch,
ids are deterministic per cause, the timer is the earliest moment a rule's answer can move, a merged-away
profile exits everything and a deleted segment is forgotten silently."""

from __future__ import annotations

import random

import msgspec

from profiles.segments import EventCause, TimerCause, evaluate
from profiles.segments.definitions import save
from profiles.segments.membership import Segments, reevaluate
from profiles.view import render
from tests.unit.segments_support import CONFIG, random_profile

RULES = {
    "buyers": "transactions.orders >= 1",
    "active_7d": 'windows["7d"].clicks >= 1',
    "heavy": 'windows["30d"].spend > 50.0 && rfm.recency_days < 20',
    "lapsed": 'journey_stage == "lapsed"',
}
SEGMENTS = Segments.of({name: save(None, name, "", rule, now_ms=0) for name, rule in RULES.items()})


def test_changes_are_the_difference_between_memberships_computed_from_scratch() -> None:
    rng = random.Random(11)
    kinds: set[str] = set()
    for _ in range(60):
        state = random_profile(rng)
        last = state.last_event_ms or 0
        first_at, later_at = last, last + rng.randint(0, 90) * 86_400_000
        first = reevaluate(state, {}, SEGMENTS, at_ms=first_at, cause=EventCause("e-1"), config=CONFIG)
        later = reevaluate(
            state, first.memberships, SEGMENTS, at_ms=later_at, cause=TimerCause(later_at), config=CONFIG
        )
        for when, result in ((first_at, first), (later_at, later)):
            view = render(state, when, CONFIG)
            expected = {n for n, s in SEGMENTS.by_name.items() if evaluate(s.rule, view, {}).member}
            assert set(result.memberships) == expected
        entered = {c.segment for c in later.changes if c.change == "entered"}
        exited = {c.segment for c in later.changes if c.change == "exited"}
        assert entered == set(later.memberships) - set(first.memberships)
        assert exited == set(first.memberships) - set(later.memberships)
        assert all(c.cause == {"timer": c.at} for c in later.changes)
        kinds |= {c.change for c in later.changes}
    assert kinds == {"entered", "exited"}, "time passing must both add and remove members here"


def test_the_same_cause_gives_the_same_change_ids_and_another_cause_other_ids() -> None:
    state = random_profile(random.Random(3))
    at = state.last_event_ms or 0
    once = reevaluate(state, {}, SEGMENTS, at_ms=at, cause=EventCause("e-7"), config=CONFIG)
    twice = reevaluate(state, {}, SEGMENTS, at_ms=at, cause=EventCause("e-7"), config=CONFIG)
    other = reevaluate(state, {}, SEGMENTS, at_ms=at, cause=EventCause("e-8"), config=CONFIG)
    assert once.changes
    assert [c.change_id for c in once.changes] == [c.change_id for c in twice.changes]
    assert not {c.change_id for c in once.changes} & {c.change_id for c in other.changes}


def test_no_answer_changes_before_the_timer() -> None:
    rng = random.Random(5)
    for _ in range(30):
        state = random_profile(rng)
        at = state.last_event_ms or 0
        result = reevaluate(state, {}, SEGMENTS, at_ms=at, cause=EventCause("e-1"), config=CONFIG)
        if result.timer_ms is None:
            continue
        assert result.timer_ms > at
        just_before = reevaluate(
            state, result.memberships, SEGMENTS, at_ms=result.timer_ms - 1, cause=TimerCause(0), config=CONFIG
        )
        assert just_before.changes == []


def test_a_merged_away_profile_exits_everything_and_a_deleted_segment_is_forgotten() -> None:
    state = random_profile(random.Random(9))
    at = state.last_event_ms or 0
    before = reevaluate(state, {}, SEGMENTS, at_ms=at, cause=EventCause("e-1"), config=CONFIG)
    assert before.memberships
    state.merged_into = "c-elsewhere"
    merged = reevaluate(state, before.memberships, SEGMENTS, at_ms=at, cause=EventCause("e-2"), config=CONFIG)
    assert merged.memberships == {}
    assert {(c.segment, c.change) for c in merged.changes} == {(n, "exited") for n in before.memberships}
    state.merged_into = None
    fewer = Segments.of({})
    assert reevaluate(state, before.memberships, fewer, at_ms=at, cause=EventCause("e-3"), config=CONFIG).changes == []


def test_a_segment_created_again_under_a_deleted_ones_name_is_entered_afresh() -> None:
    """Memberships of the deleted segment stay stored until the profile is evaluated again; they must not
    count as memberships of the new one (its member set starts empty, and subscribers must hear `entered`)."""
    state = random_profile(random.Random(5))
    state.orders = max(state.orders, 1)
    at = state.last_event_ms or 0
    edited = msgspec.structs.replace(save(None, "buyers", "", "transactions.orders >= 1", now_ms=0), version=2)
    again = msgspec.structs.replace(edited, version=3, first_version=3)
    for definition, previous, changes, memberships in (
        (edited, {"buyers": 1}, [], {"buyers": 1}),  # an edit: still the member it was, under its version
        (again, {"buyers": 1}, [("entered", 3)], {"buyers": 3}),  # created again: entered under the new one
        (again, {"buyers": 3}, [], {"buyers": 3}),
    ):
        result = reevaluate(
            state, previous, Segments.of({"buyers": definition}), at_ms=at, cause=EventCause("e-1"), config=CONFIG
        )
        assert [(c.change, c.segment_version) for c in result.changes] == changes
        assert result.memberships == memberships
    state.merged_into = "c-elsewhere"  # merged away: nothing to exit from a membership of the deleted one
    merged = reevaluate(
        state, {"buyers": 1}, Segments.of({"buyers": again}), at_ms=at, cause=EventCause("e-2"), config=CONFIG
    )
    assert (merged.changes, merged.memberships) == ([], {})
