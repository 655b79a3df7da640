"""Membership transitions and the ``segments.changes`` record they produce.

A change is identified by what caused it, not by when it was computed: ``change_id`` hashes the customer,
the segment, its version, the direction and the cause. A worker that crashes after producing a change and
evaluates the same cause again after restarting therefore re-sends the same id, and consumers
de-duplicate on it (at-least-once delivery, exactly-once effect).

>>> from profiles.segments.evaluate import Evaluation
>>> change = transition(False, Evaluation(True, {"transactions": {"orders": 2}}), customer_id="c-1",
...                     segment="buyers", segment_version=3, at_ms=0, cause=EventCause("e-9"))
>>> change.change, change.cause, change.at
('entered', {'event_id': 'e-9'}, '1970-01-01T00:00:00.000Z')
>>> transition(True, Evaluation(True, {}), customer_id="c-1", segment="buyers", segment_version=3,
...            at_ms=0, cause=EventCause("e-10")) is None
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from msgspec import Struct

from profiles.segments.evaluate import Evaluation
from profiles.timeutil import iso

ChangeKind = Literal["entered", "exited"]


@dataclass(frozen=True, slots=True)
class EventCause:
    """An applied event changed the profile (for a batch: the last event of the customer in it)."""

    event_id: str

    def as_record(self) -> dict[str, Any]:
        return {"event_id": self.event_id}


@dataclass(frozen=True, slots=True)
class TimerCause:
    """Time passed with no event: a timer set by ``timing.next_time_change`` fired, at that event time."""

    at_ms: int

    def as_record(self) -> dict[str, Any]:
        return {"timer": iso(self.at_ms)}


@dataclass(frozen=True, slots=True)
class DefinitionCause:
    """The segment was published or edited, and existing profiles were evaluated against this version."""

    version: int

    def as_record(self) -> dict[str, Any]:
        return {"definition": self.version}


@dataclass(frozen=True, slots=True)
class ModelCause:
    """The served versions of the models a score rule reads changed, and existing profiles were evaluated
    again: the ``sweep``-th evaluation of this segment version (0 was the definition's own), started when
    the models were at ``versions`` (model → active version, None for none: the cold-start heuristic).

    The sweep number keeps a rollback to versions served before from repeating earlier change ids.

    >>> ModelCause((("churn_risk", 7),), 2).as_record()
    {'models': {'churn_risk': 7}, 'sweep': 2}
    """

    versions: tuple[tuple[str, int | None], ...]
    sweep: int

    def as_record(self) -> dict[str, Any]:
        return {"models": dict(self.versions), "sweep": self.sweep}


@dataclass(frozen=True, slots=True)
class ErasureCause:
    """The customer was erased (``erasure_id``: the receipt): every segment it was in is exited, so that
    each subscriber learns that it must forget the customer too."""

    erasure_id: str

    def as_record(self) -> dict[str, Any]:
        return {"erasure": self.erasure_id}


@dataclass(frozen=True, slots=True)
class PromotionCause:
    """``rapport namespace promote`` made ``promoted`` served in place of ``previous``, whose memberships
    differed; ``at_ms`` (the promoting clock) keeps a later promotion back and forth from repeating ids."""

    previous: str
    promoted: str
    at_ms: int

    def as_record(self) -> dict[str, Any]:
        return {"promotion": {"from": self.previous, "to": self.promoted, "at": iso(self.at_ms)}}


Cause = EventCause | TimerCause | DefinitionCause | ModelCause | ErasureCause | PromotionCause


class SegmentChange(Struct, kw_only=True, frozen=True):
    """One record of ``segments.changes``, keyed by ``customer_id``."""

    change_id: str
    #: The profile id: the customer id, or ``anon:<anonymous_id>`` for a visitor never identified.
    customer_id: str
    segment: str
    segment_version: int
    change: ChangeKind
    #: The event time the membership was evaluated at (RFC 3339 UTC).
    at: str
    cause: dict[str, Any]
    #: The profile fields the rule read, as they were at ``at``.
    excerpt: dict[str, Any]


def change_id(customer_id: str, segment: str, segment_version: int, change: ChangeKind, cause: Cause) -> str:
    """A 128-bit hex digest of what identifies the change; the same inputs give the same id in any process.

    >>> change_id("c-1", "buyers", 1, "entered", EventCause("e-1"))
    'd39667e0b804455bbcb471a5722104a3'
    >>> len({change_id("c-1", "buyers", 1, kind, TimerCause(5)) for kind in ("entered", "exited")})
    2
    """
    # A JSON array: unambiguous where plain concatenation is not ("a|b" + "c" vs "a" + "b|c").
    key = msgspec.json.encode([customer_id, segment, segment_version, change, cause.as_record()])
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def transition(
    previous: bool,
    evaluation: Evaluation,
    *,
    customer_id: str,
    segment: str,
    segment_version: int,
    at_ms: int,
    cause: Cause,
) -> SegmentChange | None:
    """The change from ``previous`` membership to ``evaluation``'s, or None when membership is unchanged."""
    if evaluation.member == previous:
        return None
    kind: ChangeKind = "entered" if evaluation.member else "exited"
    at = iso(at_ms)
    assert at is not None
    return SegmentChange(
        change_id=change_id(customer_id, segment, segment_version, kind, cause),
        customer_id=customer_id,
        segment=segment,
        segment_version=segment_version,
        change=kind,
        at=at,
        cause=cause.as_record(),
        excerpt=evaluation.excerpt,
    )


def erasure_exits(
    customer_id: str, memberships: Mapping[str, int], *, erasure_id: str, at_ms: int
) -> list[SegmentChange]:
    """The exits of an erased customer from the segments it was in (name → the version it entered under),
    in name order; the excerpt is empty: the profile is gone.

    >>> [(c.segment, c.change, c.cause, c.excerpt) for c in erasure_exits("c-1", {"vip": 2, "buyers": 1},
    ...                                                                     erasure_id="er_1", at_ms=0)]
    [('buyers', 'exited', {'erasure': 'er_1'}, {}), ('vip', 'exited', {'erasure': 'er_1'}, {})]
    """
    cause = ErasureCause(erasure_id)
    exits = [
        transition(
            True,
            Evaluation(False, {}),
            customer_id=customer_id,
            segment=segment,
            segment_version=version,
            at_ms=at_ms,
            cause=cause,
        )
        for segment, version in sorted(memberships.items())
    ]
    return [change for change in exits if change is not None]  # every one: membership goes from in to out


def promoted_differences(
    served: Mapping[str, set[str]], promoted: Mapping[str, set[str]], versions: Mapping[str, int]
) -> dict[str, list[str]]:
    """Per segment of the promoted namespace (``versions``: segment → its version there), the profile ids
    whose membership differs between ``served``'s and ``promoted``'s members, in id order. A segment only
    the served namespace has is gone, as if deleted: it has none.

    >>> promoted_differences({"vip": {"a", "b"}, "old": {"a"}}, {"vip": {"b", "c"}}, {"vip": 2})
    {'vip': ['a', 'c']}
    """
    return {segment: sorted(served.get(segment, set()) ^ promoted.get(segment, set())) for segment in sorted(versions)}


def promotion_changes(
    served: Mapping[str, set[str]],
    promoted: Mapping[str, set[str]],
    versions: Mapping[str, int],
    cause: PromotionCause,
    excerpts: Mapping[str, Mapping[str, dict[str, Any]]] | None = None,
) -> list[SegmentChange]:
    """What subscribers must hear when ``promoted``'s members (segment → profile ids) replace ``served``'s:
    an entry for each member only ``promoted`` has, an exit for each one only ``served`` has, for the
    promoted namespace's segments (``promoted_differences``). ``excerpts``: profile id → segment → the
    fields the rule reads in the promoted namespace's profile at the promotion (none: empty, e.g. for a
    profile the promoted namespace does not hold).

    >>> cause = PromotionCause("live", "rebuild-1", 0)
    >>> excerpts = {"c": {"vip": {"rfm": {"monetary": 900.0}}}}
    >>> changes = promotion_changes({"vip": {"a", "b"}, "old": {"a"}}, {"vip": {"b", "c"}}, {"vip": 2}, cause, excerpts)
    >>> [(c.customer_id, c.segment, c.segment_version, c.change, c.excerpt) for c in changes]
    [('a', 'vip', 2, 'exited', {}), ('c', 'vip', 2, 'entered', {'rfm': {'monetary': 900.0}})]
    >>> changes[0].cause
    {'promotion': {'from': 'live', 'to': 'rebuild-1', 'at': '1970-01-01T00:00:00.000Z'}}
    """
    changes: list[SegmentChange] = []
    known = excerpts or {}
    for segment, differing in promoted_differences(served, promoted, versions).items():
        before, after, version = served.get(segment, set()), promoted.get(segment, set()), versions[segment]
        for customer_id in differing:
            change = transition(
                customer_id in before,
                Evaluation(customer_id in after, known.get(customer_id, {}).get(segment, {})),
                customer_id=customer_id,
                segment=segment,
                segment_version=version,
                at_ms=cause.at_ms,
                cause=cause,
            )
            assert change is not None  # membership differs, so there is a change
            changes.append(change)
    return changes
