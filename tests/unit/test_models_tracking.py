"""``ModelTracking`` (what the worker runs around each batch) against the reference loop of
``tests.unit.models_support``, which folds the history in event-time order: the same customer history,
arriving out of order (within the watermark lag) in batches of various sizes, with the watermark moving
only between batches, some batches re-sent events that move nothing, quiet spells handled by the due time
alone and the views stored and loaded between batches, must release exactly the reference's examples —
whatever the arrival order and the watermark's pace."""

from __future__ import annotations

import math
import random

import msgspec
import pytest

from profiles.config import DAY_MS, HOUR_MS
from profiles.fold import Link, apply
from profiles.merge import merge_into
from profiles.models.labels import Example
from profiles.models.tracking import ModelTracking
from profiles.models.vectors import FEATURE_DIGEST, FEATURE_NAMES
from profiles.models.view import decode_entry, decode_view, encode_entry, encode_view
from profiles.pending_store import decode_pending, encode_pending
from profiles.state import ProfileState, anonymous_profile_id, encode, new_profile
from profiles.timeutil import from_ms, to_ms
from schemas.events import AnyEvent, ClickEvent, IdentifyEvent
from tests.unit.models_support import CONFIG, CUSTOMER, Worker, day, identify
from tests.unit.test_models_labels import SPECS, customer_history

NAMES = {FEATURE_DIGEST: FEATURE_NAMES}


def arrival_order(events: list[AnyEvent], disorder_ms: int, rng: random.Random) -> list[AnyEvent]:
    """The events as a worker might read them: each up to ``disorder_ms`` after the ones that follow it."""
    return sorted(events, key=lambda e: to_ms(e.timestamp) + rng.uniform(0, disorder_ms))


class Run:
    """The worker's use of ``ModelTracking`` for one customer, as ``streams.model_stage`` stores and loads
    it: per batch the hooks turn events into entries; the customer is folded only when the watermark passes
    its due time, else its entries are appended; the stored forms go through their codecs."""

    def __init__(self, lag_ms: int) -> None:
        self.lag_ms = lag_ms
        self.live = new_profile(CUSTOMER, CUSTOMER)
        # What Redis holds between batches.
        self.pending = encode_pending([])
        self.view: bytes | None = None
        self.entries: dict[bytes, int] = {}  # encoded entry → entry time, as in the sorted set
        self.due: int | None = None
        self.watermark, self.newest = 0, 0
        self.released: list[Example] = []
        self.folds = 0

    def tracking(self, target: int) -> ModelTracking:
        return ModelTracking(SPECS, CONFIG, {0: self.watermark}, targets={0: target})

    def finish(self, tracking: ModelTracking) -> None:
        _, new = tracking.advanced().get(0, (self.watermark, self.watermark))
        added = tracking.entry_due(CUSTOMER)
        if (self.due is not None and self.due <= new) or (added is not None and added <= new):
            view = decode_view(self.view) if self.view is not None else tracking.new_views[CUSTOMER]
            # Only the stored entries up to the watermark are loaded; of the others, the first one's time.
            stored = [decode_entry(e) for e, at in sorted(self.entries.items(), key=lambda kv: kv[1]) if at <= new]
            later = min((at for at in self.entries.values() if at > new), default=None)
            pending = decode_pending(CUSTOMER, self.pending, NAMES)[0]
            done = tracking.fold(view, stored, pending, new, later_ms=later)
            self.released += done.examples
            self.pending, self.view = encode_pending(done.pending), encode_view(done.view)
            self.entries = {e: at for e, at in self.entries.items() if at > new}
            self.entries.update({encode_entry(e): e.at_ms for e in done.entries})
            self.due = done.due
            self.folds += 1
        else:
            if CUSTOMER in tracking.new_views:
                self.view = encode_view(tracking.new_views[CUSTOMER])
            self.entries.update({encode_entry(e): e.at_ms for e in tracking.entries.get(CUSTOMER, [])})
            if added is not None:
                self.due = added if self.due is None else min(self.due, added)
        self.watermark = new
        if self.entries:  # the due index brings the customer back for its first unfolded entry, loaded or not
            assert self.due is not None
            assert self.due <= min(self.entries.values()) + tracking.fold_delay_ms

    def idle(self, target: int) -> None:
        """The partition's watermark moves on with other customers' events."""
        if target > self.watermark:
            self.finish(self.tracking(target))

    def batch(self, events: list[AnyEvent], handovers: list[tuple[str, ProfileState]] | None = None) -> None:
        self.newest = max([self.newest, *(to_ms(e.timestamp) for e in events)])
        tracking = self.tracking(max(self.watermark, self.newest - self.lag_ms))
        for event in events:
            tracking.before(self.live, event)
            identifies = isinstance(event, IdentifyEvent) and event.anonymous_id is not None
            link = Link(event.anonymous_id, None) if identifies and event.anonymous_id else None
            if apply(self.live, event, CONFIG, link):
                tracking.after(self.live, event, msgspec.json.encode(event))
        for visitor_id, visitor in handovers or []:
            tracking.handed_over(self.live, visitor_id, encode(visitor))
            merge_into(self.live, visitor, CONFIG)
        self.finish(tracking)

    def end(self, until_ms: int) -> list[Example]:
        self.idle(until_ms)
        return sorted(self.released, key=lambda e: (e.horizon_end_ms, e.example_id))


def tracked_run(events: list[AnyEvent], until_ms: int, lag_ms: int, rng: random.Random) -> list[Example]:
    run = Run(lag_ms)
    arrived = arrival_order(events, lag_ms // 2, rng)
    i = 0
    while i < len(arrived):
        if rng.random() < 0.3:  # quiet: the watermark moves on with other customers' events
            run.idle(min(to_ms(e.timestamp) for e in arrived[i:]) - 1)
        if i and rng.random() < 0.2:
            run.batch([arrived[rng.randrange(i)]])  # a re-sent earlier event: applied before, it moves nothing
            continue
        batch = arrived[i : i + rng.randint(1, 6)]
        i += len(batch)
        run.batch(batch)
    return run.end(until_ms)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("lag_ms", [2 * HOUR_MS, 2 * DAY_MS, 40 * DAY_MS])
def test_any_arrival_order_and_watermark_pace_release_the_reference_examples(seed: int, lag_ms: int) -> None:
    events = customer_history(seed)
    reference = Worker(SPECS).run(events, until_ms=day(300))
    tracked = tracked_run(events, day(300), lag_ms, random.Random(seed))
    assert [e.example_id for e in tracked] == [e.example_id for e in reference]
    assert tracked == reference
    for model in SPECS:
        assert len({e.label for e in reference if e.model == model}) > 1, model  # the comparison says something


def visitor_click(n: int, ms: int) -> ClickEvent:
    return ClickEvent(
        event_id=f"v-{n}", anonymous_id="a-1", timestamp=from_ms(ms), action="product_view", url="/p",
        session_id=f"vs-{n}", category="bags",
    )  # fmt: skip


def test_a_visitor_enters_the_customer_at_its_link_whenever_its_hand_over_arrives() -> None:
    """Live, a hand-over reaches the customer tens of milliseconds after the identify; a replay folds it
    after the rest of its chunk, past later events of the customer: the examples must not differ."""
    visitor = new_profile(anonymous_profile_id("a-1"), None)
    for n, at in enumerate([day(0.1), day(0.5), day(1.0)]):
        apply(visitor, visitor_click(n, at), CONFIG)
    link = identify(100, day(2))
    link = msgspec.structs.replace(link, anonymous_id="a-1")
    own = [
        msgspec.structs.replace(e, event_id=f"c-{e.event_id}")
        for e in customer_history(5)
        if to_ms(e.timestamp) > day(2)
    ]
    # Routed to the customer after the link: they enter at it, one sorting before the identify, one after.
    stragglers: list[AnyEvent] = [
        msgspec.structs.replace(visitor_click(n, day(at)), event_id=f"{key}-late")
        for n, at, key in ((8, 1.5, "a"), (9, 1.6, "z"))
    ]

    def run(order: str) -> list[Example]:
        r = Run(30 * DAY_MS)  # the customer's next events are three weeks later: within the lag
        r.batch([link])
        if order == "at once":
            r.batch([], [(visitor.profile_id, visitor)])
            r.batch([*stragglers, *own[:2]])
        else:  # the hand-over after the customer's next events, the stragglers after that
            r.batch(own[:2], [(visitor.profile_id, visitor)])
            r.batch(stragglers)
        for i in range(2, len(own), 4):
            r.batch(own[i : i + 4])
        return r.end(day(300))

    at_once, later = run("at once"), run("later")
    assert len(at_once) > 20
    assert at_once == later
    # No snapshot before the link (the stragglers take none); the one the identify takes holds the visitor's
    # history, stragglers included, whatever their order at that instant.
    first = min(at_once, key=lambda e: e.taken_at_ms)
    assert first.taken_at_ms == day(2)
    assert first.features["sessions"] == pytest.approx(math.log1p(5))
    assert first.features["days_since_first_seen"] == pytest.approx((day(2) - day(0.1)) / DAY_MS)
