"""Re-evaluating one profile against every live segment: its new memberships, the changes, its next timer.

The owning worker calls this after a profile changes (cause: the event), when a timer it set fires (cause:
the timer's instant) and when a definition is published or edited (cause: the definition). Pure: the caller
renders nothing and reads no clock; it passes the state, the instant and what it knows.

A membership remembers the segment version it was decided under. A segment deleted since is forgotten
without an exit event (the segment itself is gone); a merged-away or erased profile is in no segment (a
merged one exits everything: its customer profile is evaluated on its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from profiles.config import FoldConfig
from profiles.rfm import RfmScores
from profiles.segments.changes import Cause, SegmentChange, transition
from profiles.segments.definitions import SegmentDefinition
from profiles.segments.evaluate import Evaluation, context, evaluate_in, excerpt
from profiles.segments.fields import Path
from profiles.segments.rules import CompiledRule, compile_rule
from profiles.segments.timing import next_time_change
from profiles.state import ProfileState
from profiles.view import render


@dataclass(frozen=True, slots=True)
class LiveSegment:
    definition: SegmentDefinition
    rule: CompiledRule


@dataclass(frozen=True, slots=True)
class Segments:
    """The live segments, compiled once per definition change (not per profile)."""

    by_name: Mapping[str, LiveSegment]
    reads: frozenset[Path]  # every field some rule reads: what timers must watch

    @classmethod
    def of(cls, definitions: Mapping[str, SegmentDefinition]) -> Segments:
        """Compiled definitions. Saved rules compiled when they were saved; one that no longer compiles
        (a field removed from the profile) raises here, loudly, rather than silently selecting nobody."""
        live = {name: LiveSegment(d, compile_rule(d.rule)) for name, d in sorted(definitions.items())}
        return cls(live, frozenset(path for s in live.values() for path in s.rule.reads))


@dataclass(frozen=True, slots=True)
class Reevaluation:
    memberships: dict[str, int]  # segment → the version the membership was decided under
    changes: list[SegmentChange]
    timer_ms: int | None  # when time alone can change an answer next (None: never)


def reevaluate(
    state: ProfileState,
    previous: Mapping[str, int],
    segments: Segments,
    *,
    at_ms: int,
    cause: Cause | Mapping[str, Cause],
    config: FoldConfig,
    scores: Mapping[str, float] | None = None,
    rfm: RfmScores | None = None,
) -> Reevaluation:
    """``state``'s memberships at ``at_ms`` (event time, ≥ its latest event) given the ``previous`` ones;
    ``cause``: of every change, or per segment (several segments' evaluations of existing profiles at once,
    each caused by its own definition version: the profile is rendered once for all of them).

    >>> from profiles.segments.changes import EventCause
    >>> from profiles.segments.definitions import save
    >>> from profiles.state import new_profile
    >>> buyers = Segments.of({"buyers": save(None, "buyers", "", "transactions.orders >= 1", now_ms=0)})
    >>> state = new_profile("c-1", "c-1")
    >>> state.orders, state.last_event_ms = 1, 0
    >>> first = reevaluate(state, {}, buyers, at_ms=0, cause=EventCause("e-1"), config=FoldConfig())
    >>> first.memberships, [c.change for c in first.changes]
    ({'buyers': 1}, ['entered'])
    >>> reevaluate(state, first.memberships, buyers, at_ms=0, cause=EventCause("e-2"), config=FoldConfig()).changes
    []
    """
    causes = cause if isinstance(cause, Mapping) else dict.fromkeys(segments.by_name, cause)
    if state.merged_into is not None:
        return _exit_all(state.profile_id, previous, segments, at_ms=at_ms, causes=causes)
    root = context(render(state, at_ms, config, rfm=rfm), scores or {})
    memberships: dict[str, int] = {}
    changes: list[SegmentChange] = []
    for name, segment in segments.by_name.items():
        member = segment.rule.matches(root)
        was = name in previous and segment.definition.holds(previous[name])
        if member != was:
            change = transition(
                was,
                evaluate_in(segment.rule, root),
                customer_id=state.profile_id,
                segment=name,
                segment_version=segment.definition.version,
                at_ms=at_ms,
                cause=causes[name],
            )
            assert change is not None  # membership differs, so there is a change
            changes.append(change)
        if member:
            memberships[name] = previous[name] if was else segment.definition.version
    timer = next_time_change(state, at_ms, config, segments.reads) if segments.by_name else None
    return Reevaluation(memberships, changes, timer)


def excerpts(
    state: ProfileState,
    segments: Segments,
    *,
    at_ms: int,
    config: FoldConfig,
    scores: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per segment, the fields its rule reads in ``state`` at ``at_ms`` (the profile rendered once); none for
    a merged-away profile, which has no fields of its own.

    >>> from profiles.segments.definitions import save
    >>> from profiles.state import new_profile
    >>> buyers = Segments.of({"buyers": save(None, "buyers", "", "transactions.orders >= 1", now_ms=0)})
    >>> state = new_profile("c-1", "c-1")
    >>> state.orders, state.last_event_ms = 2, 0
    >>> excerpts(state, buyers, at_ms=0, config=FoldConfig())
    {'buyers': {'transactions': {'orders': 2}}}
    """
    if state.merged_into is not None:
        return {}
    root = context(render(state, max(at_ms, state.last_event_ms or at_ms), config), scores or {})
    return {name: excerpt(segment.rule, root) for name, segment in segments.by_name.items()}


def current_memberships(entered: Mapping[str, int], definitions: Mapping[str, SegmentDefinition]) -> dict[str, int]:
    """The memberships (segment → version entered under) that belong to live segments: a deleted segment's,
    or its earlier incarnation's when the name was created again, stay stored until the profile is evaluated
    again, and are not shown.

    >>> from profiles.segments.definitions import save
    >>> vip = save(None, "vip", "", "true", now_ms=0)
    >>> again = SegmentDefinition(name="vip", description="", rule="true", version=3, updated_at="", first_version=3)
    >>> current_memberships({"vip": 1, "gone": 2}, {"vip": vip}), current_memberships({"vip": 1}, {"vip": again})
    ({'vip': 1}, {})
    """
    return {
        name: version
        for name, version in entered.items()
        if (definition := definitions.get(name)) is not None and definition.holds(version)
    }


def _exit_all(
    profile_id: str, previous: Mapping[str, int], segments: Segments, *, at_ms: int, causes: Mapping[str, Cause]
) -> Reevaluation:
    changes = []
    for name in sorted(previous):
        segment = segments.by_name.get(name)
        if segment is None or not segment.definition.holds(previous[name]):
            continue  # a deleted segment's membership: nothing to exit
        change = transition(
            True,
            Evaluation(False, {}),
            customer_id=profile_id,
            segment=name,
            segment_version=segment.definition.version,
            at_ms=at_ms,
            cause=causes[name],
        )
        if change is not None:
            changes.append(change)
    return Reevaluation({}, changes, None)
