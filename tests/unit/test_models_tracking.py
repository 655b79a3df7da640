"""``ModelTracking`` (what the worker runs around each batch) against the reference loop of
``profiles.models.policy``: the same customer history, cut into batches of various sizes with the watermark
moving only between batches (some batches are re-sent events that move nothing), and quiet spells handled
by the due time alone, must release exactly the reference loop's examples."""

from __future__ import annotations

import random

import pytest

from profiles.config import DAY_MS
from profiles.fold import apply
from profiles.models.labels import Example, Pending
from profiles.models.tracking import ModelTracking
from profiles.state import new_profile
from profiles.timeutil import to_ms
from schemas.events import AnyEvent
from tests.unit.models_support import CONFIG, CUSTOMER, Worker, day
from tests.unit.test_models_labels import SPECS, customer_history

LAG = 2 * DAY_MS


def tracked_run(events: list[AnyEvent], until_ms: int, rng: random.Random) -> list[Example]:
    """The worker's use of ``ModelTracking``: per batch, fold with the hooks, then advance to the target;
    between batches, a due profile is advanced from its due time (``streams.model_stage``)."""
    state = new_profile(CUSTOMER, CUSTOMER)
    pending: dict[str, list[Pending]] = {}
    watermark, due, newest, released = 0, None, 0, []
    i = 0
    while i < len(events):
        if i and rng.random() < 0.2:
            batch = [events[rng.randrange(i)]]  # a re-sent earlier event: the watermark stays
        else:
            batch = events[i : i + rng.randint(1, 6)]
            i += len(batch)
        target = max(watermark, max(to_ms(e.timestamp) for e in batch) - LAG)
        # the due path first, as a tick between batches would run it
        if due is not None and due <= watermark:
            quiet = ModelTracking(SPECS, CONFIG, pending, {0: watermark}, targets={0: watermark})
            released += quiet.advance(state, due - 1, watermark)
            due = quiet.next_due(state, watermark)
        tracking = ModelTracking(SPECS, CONFIG, pending, {0: watermark}, targets={0: target})
        for event in batch:
            newest = max(newest, to_ms(event.timestamp))
            tracking.before(state, event)
            if apply(state, event, CONFIG):
                tracking.after(state, event)
        old, new = tracking.advanced().get(0, (watermark, watermark))
        released += tracking.advance(state, old, new)
        watermark, due = new, tracking.next_due(state, new)
    final = ModelTracking(SPECS, CONFIG, pending, {0: watermark}, targets={0: until_ms})
    old, new = final.advanced()[0]
    released += final.advance(state, old, new)
    return sorted(released, key=lambda e: (e.horizon_end_ms, e.example_id))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_batches_and_a_per_batch_watermark_release_the_reference_loops_examples(seed: int) -> None:
    events = customer_history(seed)
    reference = Worker(SPECS, lag_ms=LAG).run(events, until_ms=day(300))
    tracked = tracked_run(events, day(300), random.Random(seed))
    assert [e.example_id for e in tracked] == [e.example_id for e in reference]
    assert tracked == reference
