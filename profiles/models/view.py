"""The models' view of a customer: the profile folded in event-time order up to a clock, and the entries
after it. Pure: the caller loads and stores views (``profiles.pending_store``).

The live profile folds events as they arrive, and a snapshot taken from it can only be taken at its
newest event: which events take a snapshot, and which events a census snapshot's features hold, would then
depend on the order the events arrived in — live traffic, a catch-up reading five topics unevenly and a
replay reading them merged by record time would each train on other examples. The view makes snapshots a
function of the events alone. Each event the live fold applies to a customer also becomes an ``Entry`` of
the customer's at its *entry time*, appended to the customer's entry list; the view folds the entries in
``(entry time, order, key)`` order once the event-time watermark has passed them (``fold_until``), taking
the census snapshots between them and the activity and email snapshots at them. Every snapshot then comes
from a state that holds exactly the entries up to its instant, whatever order they arrived in.

Folding may wait: a snapshot only has to exist before the watermark passes its horizon's end, so a
customer's view is folded when the watermark is ``fold_delay`` (the shortest horizon) past its first
unfolded entry or census instant, or past its first expiry (``next_due``) — not on every batch that
touches the customer, which would decode and store the view each time.

Entry times:

- a customer's own event enters at its event time;
- an event of a linked visitor id routed to the customer (after the link, or held until the hand-over)
  enters at ``max(event time, link time)``: before the identify, the customer was not known to have made it;
- a visitor's hand-over enters as one block, the visitor's folded state, at ``max(link time, the
  visitor's newest event)``.

An entry at or before the clock (later than the watermark lag allows) is folded out of order, and takes no
snapshot: the lateness limit of the labels too (``docs/models.md``).

The view keeps no identity or exactly-once bookkeeping (``strip``): the live fold decided which events
count, and only they enter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import groupby
from typing import Final

import msgspec
from msgspec import Struct

from profiles.compression import compress, compress_entry, decompress, decompress_entry
from profiles.config import FoldConfig
from profiles.fold import compact, fold_new
from profiles.merge import merge_into
from profiles.models.labels import Pending, resolve_on_events
from profiles.models.policy import census_between, census_instants, latest_activity, take_snapshots
from profiles.models.specs import ModelSpec
from profiles.state import ProfileState, anonymous_profile_id, decode, encode, new_profile
from profiles.timeutil import to_ms
from schemas.events import AnyEvent
from schemas.validation import Rejection, decode_event

#: Entry order at one instant: a hand-over first, so that the snapshot the identify takes at the link
#: already holds the visitor's history.
HANDOVER: Final = 0
EVENT: Final = 1


class Entry(Struct, array_like=True, frozen=True):
    """One thing that happened to the customer, as the view folds it."""

    at_ms: int  # entry time
    order: int  # HANDOVER or EVENT
    key: str  # the event id, or the visitor's profile id
    payload: bytes  # the event's JSON as resolved, or the visitor's encoded state


class ModelView(Struct, array_like=True, kw_only=True):
    """The customer's profile as the models see it: folded in event-time order, up to the clock."""

    state: ProfileState
    clock_ms: int | None = None  # every entry at or before it is folded, every census instant taken


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(ModelView)
_ENTRY_DECODER: Final = msgspec.msgpack.Decoder(Entry)


def pack_entry(entry: Entry) -> bytes:
    """The entry in msgpack, uncompressed: what the entry dictionary is trained on, and how entries were
    stored until 2026-12-05."""
    return _ENCODER.encode(entry)


def encode_entry(entry: Entry) -> bytes:
    """The entry as stored (zstd with the entry dictionary, ``profiles.compression``)."""
    return compress_entry(pack_entry(entry))


def decode_entry(blob: bytes) -> Entry:
    return _ENTRY_DECODER.decode(decompress_entry(blob))


def encode_view(view: ModelView) -> bytes:
    """The view as stored (zstd, ``profiles.compression``), without what the features never read (``strip``)."""
    strip(view.state)
    return compress(_ENCODER.encode(view))


def decode_view(blob: bytes) -> ModelView:
    return _DECODER.decode(decompress(blob))


def new_view(profile_id: str) -> ModelView:
    return ModelView(state=new_profile(profile_id, profile_id))


def view_of(state: ProfileState, clock_ms: int | None) -> ModelView:
    """A view starting from the live profile as it is (a customer tracked before views existed): what it
    holds counts as folded up to ``clock_ms``."""
    return ModelView(state=strip(decode(encode(state))), clock_ms=clock_ms)


def strip(state: ProfileState) -> ProfileState:
    """Drop what the features never read: identities, merge history and the exactly-once bookkeeping.

    >>> from profiles.state import new_profile
    >>> s = new_profile("c-1", "c-1"); s.emails.append("a@b.c"); s.source_marks[1] = 2
    >>> stripped = strip(s)
    >>> stripped.emails, stripped.source_marks
    ([], {})
    """
    state.anonymous_ids, state.emails, state.merged_from, state.conflicts = [], [], [], []
    state.recent_ids, state.recent_event_ids, state.recent_by_stream, state.stream_memories = [], {}, {}, {}
    state.source_marks, state.forward_marks, state.direct_floors = {}, {}, {}
    state.absorbed, state.held = [], []
    return state


def link_time(state: ProfileState, anonymous_id: str | None) -> int | None:
    """When ``anonymous_id`` was linked to the customer of ``state`` (its identify's event time)."""
    if anonymous_id is None:
        return None
    return next((m.at_ms for m in state.merged_from if m.anonymous_id == anonymous_id), None)


def event_entry(live: ProfileState, event: AnyEvent, payload: bytes) -> Entry:
    """The entry of an event the live fold applied to the customer profile ``live``."""
    ts = to_ms(event.timestamp)
    linked = link_time(live, event.anonymous_id) if event.customer_id is None else None
    return Entry(ts if linked is None else max(ts, linked), EVENT, event.event_id, payload)


def handover_entry(live: ProfileState, visitor_id: str, visitor_state: bytes) -> Entry:
    """The entry of a visitor's hand-over to the customer profile ``live`` (before the merge)."""
    visitor = decode(visitor_state)
    linked = next((m.at_ms for m in live.merged_from if anonymous_profile_id(m.anonymous_id) == visitor_id), None)
    times = [t for t in (linked, visitor.last_event_ms) if t is not None]
    return Entry(max(times, default=live.last_event_ms or 0), HANDOVER, visitor_id, visitor_state)


def _sort_key(entry: Entry) -> tuple[int, int, str]:
    return entry.at_ms, entry.order, entry.key


def _decoded(entry: Entry) -> AnyEvent:
    event = decode_event(entry.payload)
    if isinstance(event, Rejection):  # it was valid when the live fold applied it
        raise ValueError(f"a view entry holds an invalid event ({event.problems[0].code.value})")
    return event


def census_after(view: ModelView) -> int | None:
    """The census instants still to take are after this: the clock, and not before the latest event."""
    last = view.state.last_event_ms
    if last is None:
        return None
    return last - 1 if view.clock_ms is None else max(view.clock_ms, last - 1)


def _census_to(view: ModelView, until_ms: int, specs: Mapping[str, ModelSpec], config: FoldConfig) -> list[Pending]:
    """The census snapshots in ``(clock, until_ms]`` at or after the view's latest event; the clock moves on."""
    after = census_after(view)
    taken = [] if after is None else census_between(view.state, after, until_ms, specs, config)
    view.clock_ms = until_ms if view.clock_ms is None else max(view.clock_ms, until_ms)
    return taken


def _fold(view: ModelView, entry: Entry, config: FoldConfig) -> AnyEvent | None:
    """Fold one entry; returns the event if it is one the customer made at its entry time (a moment that
    may decide labels and take snapshots)."""
    if entry.order == HANDOVER:
        merge_into(view.state, decode(entry.payload), config)
        return None
    event = _decoded(entry)
    # An entry is an event the live fold applied as new (``ModelTracking.after``), entered once: the view
    # keeps no memory of ids (``strip``), and a duplicate check here would only repeat the live fold's.
    fold_new(view.state, event, config)
    if entry.at_ms != to_ms(event.timestamp):
        # A visitor's event entering at its link, like the visitor's history handed over in one block, is
        # not a moment of the customer's: it takes no snapshot and decides no label.
        return None
    return event


def fold_until(
    view: ModelView,
    entries: Sequence[Entry],
    pending: list[Pending],
    *,
    until_ms: int,
    specs: Mapping[str, ModelSpec],
    config: FoldConfig,
) -> tuple[list[Pending], list[Entry]]:
    """The watermark reached ``until_ms``: fold the entries up to it in order, with the census snapshots
    between them, and the activity and email snapshots of each instant once all its entries are folded.
    Entries at or before the clock came too late: folded first, out of order. Returns the pending snapshots
    and the entries after ``until_ms``. The labels are resolved once, by every moment folded, at the end:
    a snapshot is only decided by moments after its instant, so this is the same as resolving event by
    event (``resolve_on_events``).

    The result does not depend on the order the entries arrived in:

    >>> from datetime import datetime, UTC
    >>> from profiles.models.specs import default_specs
    >>> from schemas.events import ClickEvent
    >>> specs, config = default_specs(), FoldConfig()
    >>> def click(n, day):
    ...     event = ClickEvent(event_id=f"e-{n}", customer_id="c", timestamp=datetime(2025, 3, day, tzinfo=UTC),
    ...                        action="page_view", url="/", session_id=f"s-{n}")
    ...     return Entry(to_ms(event.timestamp), EVENT, event.event_id, msgspec.json.encode(event))
    >>> until = to_ms(datetime(2025, 3, 20, tzinfo=UTC))
    >>> def run(entries):
    ...     return fold_until(new_view("c"), entries, [], until_ms=until, specs=specs, config=config)[0]
    >>> forward = run([click(1, 1), click(2, 5), click(3, 9)])
    >>> forward == run([click(3, 9), click(1, 1), click(2, 5)])
    True
    >>> sorted({p.trigger for p in forward})
    ['activity', 'census']
    """
    clock = view.clock_ms
    pending = list(pending)
    decided_by: list[AnyEvent] = []
    for entry in sorted((e for e in entries if clock is not None and e.at_ms <= clock), key=_sort_key):
        if (moment := _fold(view, entry, config)) is not None:
            decided_by.append(moment)
    ready = sorted((e for e in entries if e.at_ms <= until_ms and (clock is None or e.at_ms > clock)), key=_sort_key)
    rest = [e for e in entries if e.at_ms > until_ms]
    latest = latest_activity(pending)
    census_at = next_census(view, specs)
    for at, group in groupby(ready, key=_entry_time):
        census_due = census_at is None or census_at < at  # else no census instant is due before this one
        if census_due:
            pending += _census_to(view, at - 1, specs, config)
        moments = [moment for entry in group if (moment := _fold(view, entry, config)) is not None]
        if census_due:  # its events only move the next one later: it stands until it is reached
            census_at = next_census(view, specs)
        for event in moments:
            pending += take_snapshots(view.state, event, pending, specs, config, latest=latest)
        decided_by += moments
    pending += _census_to(view, until_ms, specs, config)
    compact(view.state, config)
    return resolve_on_events(pending, decided_by, specs, config), rest


def _entry_time(entry: Entry) -> int:
    return entry.at_ms


def next_census(view: ModelView, specs: Mapping[str, ModelSpec]) -> int | None:
    """The view's next census instant (the earliest over the models), None before its first event.

    The latest event only moves it later, so a fold can skip looking for census snapshots until then."""
    after = census_after(view)
    if after is None:
        return None
    instants = [
        census_instants(view.state.profile_id, spec, after, after + spec.census_every_ms)[0]
        for spec in specs.values()
        if spec.trigger == "activity"
    ]
    return min(instants, default=None)


def next_due(
    view: ModelView | None,
    entry_times: Sequence[int],
    pending: Sequence[Pending],
    *,
    specs: Mapping[str, ModelSpec],
    fold_delay_ms: int,
    lateness_ms: int,
) -> int | None:
    """When the watermark must next reach the customer: its first expiry, or ``fold_delay_ms`` after its
    first unfolded entry (``entry_times``) or census instant (the snapshots taken then expire no earlier)."""
    due = [p.horizon_end_ms + lateness_ms for p in pending]
    due += [at + fold_delay_ms for at in entry_times]
    census_at = None if view is None else next_census(view, specs)
    if census_at is not None:
        due.append(census_at + fold_delay_ms)
    return min(due, default=None)
