"""Applying one ``events.resolved`` record to the profile it is keyed by. Pure: no I/O, no clock.

This is the apply stage's decision logic, shared by the live worker and replays: what to fold, what to
skip as already applied, when to hand an anonymous profile over to its customer, and what to forward.
The caller loads and stores states, skips records at or below the stored watermark, and sends the
returned records.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Final, Protocol

import msgspec

from profiles.config import FoldConfig
from profiles.fold import Link, apply
from profiles.ids import id_hash
from profiles.merge import merge_into
from profiles.state import ANON_PREFIX, ProfileState, anonymous_profile_id, decode, encode, new_profile
from schemas.events import AnyEvent
from schemas.resolved import Resolved
from schemas.validation import Rejection, decode_event


class FoldHooks(Protocol):
    """What reacts to each event the fold applies (the models' views): ``before`` just before an event is
    folded into a profile, ``after`` once it was applied (not a duplicate), with its JSON; ``handed_over``
    just before a visitor's encoded state is merged into a profile."""

    def before(self, state: ProfileState, event: AnyEvent) -> None: ...

    def after(self, state: ProfileState, event: AnyEvent, payload: bytes) -> None: ...

    def handed_over(self, state: ProfileState, visitor_id: str, visitor_state: bytes) -> None: ...


#: No event decoded beforehand.
NOT_DECODED: Final[Mapping[bytes, AnyEvent]] = MappingProxyType({})


class CorruptRecordError(ValueError):
    """An ``events.resolved`` record that the resolver could not have written."""


def new_state_for(profile_id: str) -> ProfileState:
    customer = None if profile_id.startswith(ANON_PREFIX) else profile_id
    return new_profile(profile_id, customer)


@lru_cache(maxsize=1 << 16)
def stream_mark(topic: str, partition: int, key: str) -> int:
    """The identity of one ordered stream of raw records: a raw partition and a record key.

    Cached by its parts: a string joined for each event would be hashed anew (1.5x the cost per event).
    """
    return id_hash(f"{topic}\x1f{partition}\x1f{key}")


def apply_resolved(
    state: ProfileState,
    record: Resolved,
    *,
    partition: int,
    offset: int,
    config: FoldConfig,
    hooks: FoldHooks | None = None,
    decoded: Mapping[bytes, AnyEvent] = NOT_DECODED,
) -> tuple[ProfileState, list[Resolved]]:
    """Apply ``record`` (at ``offset`` of ``events.resolved`` partition ``partition``) to ``state``.

    Returns the state to keep (a merged anonymous profile is replaced by a small tombstone) and the
    records to send on. ``decoded``: events already decoded, by their JSON (a replay resolves and folds in
    one process); any other event is decoded from the record.
    """
    if record.kind == "erase":
        # An erase with its receipt never gets here (``BatchFold`` deletes the profile).
        raise CorruptRecordError("an erase record without its erasure receipt")
    if record.kind == "merge_in":
        return _merge_in(state, record, config, hooks, decoded), []
    if record.kind == "merge_out":
        return _merge_out(state, record)
    if state.merged_into is not None:
        # A straggler: resolved to this anonymous profile before its link existed. A restarted resolver can
        # send it here again: the tombstone keeps the stream marks, so it forwards each raw record once.
        if record.source is not None:
            mark = stream_mark(record.source.topic, record.source.partition, event_of(record, decoded).key)
            if record.source.offset <= state.source_marks.get(mark, -1):
                return state, []
            state.source_marks[mark] = record.source.offset
        forward = Resolved(
            kind="forward",
            profile_id=state.merged_into,
            event=record.event,
            source=record.source,
            origin_partition=partition,
            origin_offset=offset,
            ingested_ms=record.ingested_ms,
        )
        return state, [forward]
    event = event_of(record, decoded)
    if record.kind == "event" and event.customer_id is None and _before_its_handover(state, event.key):
        # A restarted resolver can route an anonymous id's event here directly (the link now exists) before
        # the anonymous profile's hand-over, which may already count it: wait for the hand-over, whose
        # stream marks then tell whether it did.
        state.held.append(record)
        return state, []
    return state, _apply_event(state, record, event, partition=partition, offset=offset, config=config, hooks=hooks)


def _before_its_handover(state: ProfileState, key: str) -> bool:
    """An anonymous event (``key`` its anonymous id) routed to a customer who has not absorbed its visitor."""
    return state.customer_id is not None and anonymous_profile_id(key) not in state.absorbed


def _apply_event(
    state: ProfileState,
    record: Resolved,
    event: AnyEvent,
    *,
    partition: int,
    offset: int,
    config: FoldConfig,
    hooks: FoldHooks | None = None,
) -> list[Resolved]:
    if record.kind == "forward":
        if record.origin_partition is None or record.origin_offset is None:
            raise CorruptRecordError("a forward record without the position it was forwarded from")
        if record.origin_offset <= state.forward_marks.get(record.origin_partition, -1):
            return []  # the tombstone's batch was applied again after a crash
        state.forward_marks[record.origin_partition] = record.origin_offset
        if record.source is not None:
            # The tombstone sent it before the resolver that routed it there died; restarted, with the link
            # known, the resolver also routes it here directly, from some offset on: the direct floor.
            # Forwards can arrive after direct records with higher offsets (the link became known between
            # them), so the forward path is not checked against the stream mark.
            mark = stream_mark(record.source.topic, record.source.partition, event.key)
            if record.source.offset >= state.direct_floors.get(mark, record.source.offset + 1):
                return []
            state.source_marks[mark] = max(record.source.offset, state.source_marks.get(mark, -1))
    elif record.source is not None:
        # Routed here directly: each raw stream arrives in offset order, so a restarted resolver's repeats
        # are at or below the mark. A direct record below a forwarded one's offset was routed to the
        # anonymous profile first, by the same resolver: counted there (and merged) or forwarded already.
        mark = stream_mark(record.source.topic, record.source.partition, event.key)
        if record.source.offset <= state.source_marks.get(mark, -1):
            return []
        state.source_marks[mark] = record.source.offset
        if event.customer_id is None:
            floor = state.direct_floors.get(mark, record.source.offset)
            state.direct_floors[mark] = min(floor, record.source.offset)
    decision = record.link
    link = None if decision is None else Link(decision.anonymous_id, decision.conflict_with, decision.limited)
    if hooks is not None:
        hooks.before(state, event)
    if apply(state, event, config, link, record.email_refused) and hooks is not None and record.event is not None:
        hooks.after(state, event, record.event)
    return []


def event_of(record: Resolved, decoded: Mapping[bytes, AnyEvent] = NOT_DECODED) -> AnyEvent:
    """The event an ``event`` or ``forward`` record carries (from ``decoded`` when it is there)."""
    if record.event is None:
        raise CorruptRecordError(f"a {record.kind} record without an event")
    known = decoded.get(record.event)
    if known is not None:
        return known
    event = decode_event(record.event)
    if isinstance(event, Rejection):
        raise CorruptRecordError(f"events.resolved carries an invalid event ({event.code.value})")
    return event


def _merge_out(state: ProfileState, record: Resolved) -> tuple[ProfileState, list[Resolved]]:
    if state.merged_into is not None or record.other_profile is None:
        return state, []  # already handed over (a redelivered merge_out)
    handover = Resolved(
        kind="merge_in",
        profile_id=record.other_profile,
        other_profile=state.profile_id,
        state=encode(state) if state.events_applied else None,
    )
    tombstone = new_state_for(state.profile_id)
    tombstone.merged_into = record.other_profile
    tombstone.source_marks = state.source_marks  # what it counted is not forwarded if a resolver re-sends it
    return tombstone, [handover]


def _merge_in(
    state: ProfileState,
    record: Resolved,
    config: FoldConfig,
    hooks: FoldHooks | None,
    decoded: Mapping[bytes, AnyEvent],
) -> ProfileState:
    if record.other_profile is None or record.other_profile in state.absorbed:
        return state
    # Decoded before anything changes: a record refused as corrupt leaves the profile as it was.
    try:
        visitor = None if record.state is None else decode(record.state)
    except msgspec.MsgspecError as exc:
        raise CorruptRecordError(f"a merge_in record whose state does not decode: {exc}") from exc
    state.absorbed.append(record.other_profile)
    if visitor is not None and record.state is not None:
        if hooks is not None:
            hooks.handed_over(state, record.other_profile, record.state)
        merge_into(state, visitor, config)
    # Release what waited for this hand-over; the merged stream marks skip what the anonymous profile counted.
    waiting, state.held = state.held, []
    for held in waiting:
        event = event_of(held, decoded)
        if anonymous_profile_id(event.key) == record.other_profile:
            _apply_event(state, held, event, partition=-1, offset=-1, config=config, hooks=hooks)
        else:
            state.held.append(held)
    return state
