"""Transitions and their ids, and definitions' versions."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from profiles.segments.changes import (
    Cause,
    ChangeKind,
    DefinitionCause,
    ErasureCause,
    EventCause,
    ModelCause,
    TimerCause,
    change_id,
    erasure_exits,
    transition,
)
from profiles.segments.definitions import DefinitionError, SegmentDefinition, save
from profiles.segments.evaluate import Evaluation, evaluate
from profiles.segments.rules import RuleError, compile_rule
from tests.unit.segments_support import T0, fold, order, view

ENTERED = Evaluation(member=True, excerpt={"windows": {"7d": {"orders": 2}}})
EXITED = Evaluation(member=False, excerpt={"windows": {"7d": {"orders": 0}}})


def change(previous: bool, evaluation: Evaluation, cause: Cause, version: int = 1, customer: str = "c-1") -> object:
    return transition(
        previous, evaluation, customer_id=customer, segment="active_7d", segment_version=version, at_ms=T0, cause=cause
    )


def test_only_a_change_of_membership_is_a_transition() -> None:
    assert change(True, ENTERED, EventCause("e-1")) is None
    assert change(False, EXITED, EventCause("e-1")) is None
    entered = transition(
        False, ENTERED, customer_id="c-1", segment="active_7d", segment_version=4, at_ms=T0, cause=EventCause("e-1")
    )
    exited = transition(
        True, EXITED, customer_id="c-1", segment="active_7d", segment_version=4, at_ms=T0 + 1, cause=TimerCause(T0 + 1)
    )
    assert entered is not None
    assert exited is not None
    assert msgspec.to_builtins(entered) == {
        "change_id": entered.change_id,
        "customer_id": "c-1",
        "segment": "active_7d",
        "segment_version": 4,
        "change": "entered",
        "at": "2025-02-19T21:20:00.000Z",
        "cause": {"event_id": "e-1"},
        "excerpt": {"windows": {"7d": {"orders": 2}}},
    }
    assert (exited.change, exited.cause, exited.at) == ("exited", {"timer": "2025-02-19T21:20:00.001Z"}, exited.at)
    assert msgspec.to_builtins(DefinitionCause(7).as_record()) == {"definition": 7}


def test_the_same_cause_gives_the_same_id_in_another_process_and_any_difference_gives_another() -> None:
    causes: list[Cause] = [
        *(EventCause("e-1"), EventCause("e-2"), TimerCause(T0), TimerCause(T0 + 1), DefinitionCause(2)),
        *(ErasureCause("er_1"), ErasureCause("er_2")),
        # The same served versions in another sweep (a rollback) is another cause.
        *(
            ModelCause((("churn_risk", 3),), 1),
            ModelCause((("churn_risk", 3),), 2),
            ModelCause((("churn_risk", None),), 1),
        ),
    ]
    kinds: tuple[ChangeKind, ...] = ("entered", "exited")
    ids = {
        (customer, segment, version, kind, cause): change_id(customer, segment, version, kind, cause)
        for customer, segment, version, kind, cause in itertools.product(
            ("c-1", "c-2"), ("active_7d", "buyers"), (1, 2), kinds, causes
        )
    }
    assert len(set(ids.values())) == len(ids)
    # Recomputed from fresh values (as after a crash and restart), not from the same objects.
    assert ids[("c-1", "buyers", 2, "exited", TimerCause(T0))] == change_id(
        "c-1", "buyers", 2, "exited", TimerCause(T0)
    )
    # Ambiguous concatenations do not collide.
    assert change_id("c-1|x", "y", 1, "entered", EventCause("e")) != change_id(
        "c-1", "x|y", 1, "entered", EventCause("e")
    )


def test_an_erased_customer_exits_each_segment_it_was_in_under_the_version_it_entered() -> None:
    exits = erasure_exits("c-1", {"vip": 3, "buyers": 1}, erasure_id="er_9", at_ms=T0)
    assert [(c.segment, c.segment_version, c.change, c.cause, c.excerpt) for c in exits] == [
        ("buyers", 1, "exited", {"erasure": "er_9"}, {}),
        ("vip", 3, "exited", {"erasure": "er_9"}, {}),
    ]
    assert {c.customer_id for c in exits} == {"c-1"}
    assert exits[1].change_id == change_id("c-1", "vip", 3, "exited", ErasureCause("er_9"))
    # A worker that crashed before its write erases again later, by its clock: the same ids.
    again = erasure_exits("c-1", {"buyers": 1, "vip": 3}, erasure_id="er_9", at_ms=T0 + 5_000)
    assert [c.change_id for c in again] == [c.change_id for c in exits]
    assert again[0].at != exits[0].at
    assert erasure_exits("c-1", {}, erasure_id="er_9", at_ms=T0) == []


def test_a_re_evaluation_after_a_crash_repeats_the_change_exactly() -> None:
    rule = compile_rule('windows["7d"].orders >= 2')
    state = fold(order(1, T0 - 1000), order(2, T0))
    first, again = (
        transition(
            False,
            evaluate(rule, view(state), {}),
            customer_id="c-1",
            segment="s",
            segment_version=1,
            at_ms=T0,
            cause=EventCause("e-2"),
        )
        for _ in range(2)
    )
    assert first is not None
    assert first == again


def test_saving_validates_and_bumps_the_version_only_on_a_change() -> None:
    first = save(None, "active_7d", "Ordered this week", 'windows["7d"].orders >= 1', now_ms=T0)
    assert (first.version, first.updated_at) == (1, "2025-02-19T21:20:00.000Z")
    assert save(first, "active_7d", "Ordered this week", 'windows["7d"].orders >= 1', now_ms=T0 + 5) is first
    described = save(first, "active_7d", "Ordered in the last 7 days", 'windows["7d"].orders >= 1', now_ms=T0 + 5)
    ruled = save(described, "active_7d", "Ordered in the last 7 days", 'windows["7d"].orders >= 2', now_ms=T0 + 9)
    assert (described.version, ruled.version) == (2, 3)
    assert ruled.updated_at == "2025-02-19T21:20:00.009Z"
    with pytest.raises(RuleError):
        save(ruled, "active_7d", "", 'windows["8d"].orders >= 2', now_ms=T0)
    with pytest.raises(DefinitionError, match="slug"):
        save(None, "Active 7d", "", "true", now_ms=T0)
    with pytest.raises(DefinitionError, match="over"):
        save(ruled, "buyers", "", "true", now_ms=T0)
    stored = msgspec.json.encode(ruled)
    assert msgspec.json.decode(stored, type=SegmentDefinition) == ruled
