"""Delayed labels against hand-built event sequences, the snapshot policy, and the two guarantees the
example stream owes the learner: no leakage, and the same stream whatever the watermark's pace."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest

from profiles.config import DAY_MS, HOUR_MS
from profiles.features import features
from profiles.models.labels import (
    DEFAULT_LATENESS_MS,
    Example,
    Pending,
    SnapshotTrigger,
    expire,
    resolve_on_event,
    resolve_on_events,
)
from profiles.models.policy import census_instants, snapshot, take_snapshots
from profiles.models.specs import CHURN_RISK, CLV_90D, EMAIL_OPEN, PURCHASE_PROPENSITY, default_specs
from profiles.models.vectors import FeatureVector
from profiles.state import new_profile
from profiles.timeutil import to_ms
from schemas.events import AnyEvent, EmailAction, EmailEvent, PurchaseEvent
from tests.unit.models_support import CONFIG, CUSTOMER, T0, Worker, click, day, email, folded, order

SPECS = default_specs()


def pending_for(model: str, at: int = T0, message_id: str | None = None) -> Pending:
    state = new_profile(CUSTOMER, CUSTOMER)
    trigger: SnapshotTrigger = "email_sent" if model == EMAIL_OPEN else "activity"
    return snapshot(state, SPECS[model], trigger, at, FeatureVector.of({"x": 1.0}), message_id=message_id)


def settle(p: Pending, events: Sequence[AnyEvent]) -> Example:
    """Resolve ``p`` by ``events`` and release it once its horizon has safely passed."""
    pending = [p]
    for event in events:
        pending = resolve_on_event(pending, event, SPECS, CONFIG)
    examples, kept = expire(pending, p.horizon_end_ms + DEFAULT_LATENESS_MS, SPECS)
    assert kept == []
    return examples[0]


def test_an_order_inside_the_horizon_makes_a_purchase_positive_known_at_the_orders_time() -> None:
    p = pending_for(PURCHASE_PROPENSITY)
    example = settle(p, [click(1, day(1)), order(2, day(3)), order(3, day(2))])
    assert (example.label, example.label_known_ms) == (1.0, day(2))  # the earliest order, whatever came first


def test_orders_at_the_snapshot_instant_or_after_the_horizon_do_not_count() -> None:
    p = pending_for(PURCHASE_PROPENSITY)
    example = settle(p, [order(1, T0), order(2, day(7) + 1), order(3, T0 - 1), order(4, day(1), action="refund")])
    assert (example.label, example.label_known_ms) == (0.0, p.horizon_end_ms)


def test_an_order_on_the_horizons_last_instant_counts() -> None:
    assert settle(pending_for(PURCHASE_PROPENSITY), [order(1, day(7))]).label == 1.0


def test_any_activity_means_not_churned_and_silence_means_churned() -> None:
    assert settle(pending_for(CHURN_RISK), [email(1, day(29), "opened")]).label == 0.0
    assert settle(pending_for(CHURN_RISK), [order(1, day(12))]).label_known_ms == day(12)
    # Emails sent or delivered to the customer, and refunds, are not the customer's activity.
    quiet: list[AnyEvent] = [email(1, day(1), "sent"), email(2, day(1), "delivered"), order(3, day(2), action="refund")]
    assert settle(pending_for(CHURN_RISK), quiet).label == 1.0


def test_clv_is_the_net_spend_inside_the_horizon_floored_at_zero() -> None:
    p = pending_for(CLV_90D)
    example = settle(p, [order(1, day(10), 40.0), order(2, day(89), 25.5), order(3, day(91), 99.0)])
    assert (example.label, example.label_known_ms) == (65.5, p.horizon_end_ms)
    assert settle(pending_for(CLV_90D), [order(1, day(1), 10.0), order(2, day(2), 30.0, "refund")]).label == 0.0


def test_only_an_open_or_click_of_the_snapshotted_email_within_48h_is_a_positive() -> None:
    sent = pending_for(EMAIL_OPEN, message_id="m-1")
    assert settle(sent, [email(1, T0 + HOUR_MS, "opened", message="m-2")]).label == 0.0
    assert settle(sent, [email(1, T0 + 49 * HOUR_MS, "opened")]).label == 0.0
    assert settle(sent, [email(1, T0 + 47 * HOUR_MS, "clicked")]).label == 1.0


def expected_label(p: Pending, events: Sequence[AnyEvent]) -> tuple[bool, int | None, int]:
    """The label rules read literally, event by event: (decided, earliest deciding time, spend in cents)."""
    inside = [e for e in events if p.taken_at_ms < to_ms(e.timestamp) <= p.horizon_end_ms]
    outcome = SPECS[p.model].outcome
    if outcome == "net_spend":
        purchases = [e for e in inside if isinstance(e, PurchaseEvent)]
        return False, None, sum(round(e.total * 100) * (1 if e.action == "order" else -1) for e in purchases)
    deciding: list[AnyEvent]
    if outcome == "order":
        deciding = [e for e in inside if isinstance(e, PurchaseEvent) and e.action == "order"]
    elif outcome == "open":
        deciding = [
            e
            for e in inside
            if isinstance(e, EmailEvent) and e.action in ("opened", "clicked") and e.message_id == p.message_id
        ]
    else:  # no_activity: any customer-initiated event
        deciding = [
            e
            for e in inside
            if (e.action in ("opened", "clicked") if isinstance(e, EmailEvent) else True)
            and not (isinstance(e, PurchaseEvent) and e.action == "refund")
        ]
    times = [to_ms(e.timestamp) for e in deciding]
    return bool(times), min(times, default=None), 0


@pytest.mark.parametrize("seed", range(8))
def test_resolving_events_at_once_in_any_order_follows_the_label_rules(seed: int) -> None:
    rng = random.Random(seed)
    models = [PURCHASE_PROPENSITY, CHURN_RISK, CLV_90D, EMAIL_OPEN]
    pending = [
        pending_for(rng.choice(models), at=day(rng.uniform(0, 40)), message_id=rng.choice(["m-1", "m-2"]))
        for _ in range(30)
    ]
    email_actions: list[EmailAction] = ["sent", "opened", "clicked", "complained"]
    makers: list[Callable[[int, int], AnyEvent]] = [
        click,
        lambda n, ms: order(n, ms, total=rng.choice([9.99, 40.0, 120.5])),
        lambda n, ms: order(n, ms, total=rng.choice([9.99, 40.0]), action="refund"),
        lambda n, ms: email(n, ms, rng.choice(email_actions), rng.choice(["m-1", "m-2"])),
    ]
    # Half of the events fall on a snapshot's instant or its horizon's last instant: the bounds.
    bounds = [t for p in pending for t in (p.taken_at_ms, p.horizon_end_ms)]
    events = [rng.choice(makers)(n, rng.choice(bounds) if n % 2 else day(rng.uniform(0, 130))) for n in range(60)]
    rng.shuffle(events)
    split = rng.randrange(len(events))
    first_run = resolve_on_events(pending, events[:split], SPECS, CONFIG)
    in_two_runs = resolve_on_events(first_run, events[split:], SPECS, CONFIG)
    assert in_two_runs == resolve_on_events(pending, events, SPECS, CONFIG)
    for p, resolved in zip(pending, in_two_runs, strict=True):
        decided, at, cents = expected_label(p, events)
        assert (resolved.decided, resolved.decided_at_ms, resolved.spend_cents) == (decided, at, cents), p.model
        if (decided, cents) == (False, 0):
            assert resolved is p  # unchanged snapshots are not rewritten


def test_nothing_is_released_before_its_horizon_and_lateness_have_passed() -> None:
    p = pending_for(PURCHASE_PROPENSITY)
    positive = resolve_on_event([p], order(1, day(1)), SPECS, CONFIG)
    # A positive known on day 1 still waits for the end of its horizon, like a negative would.
    examples, kept = expire(positive, p.horizon_end_ms + DEFAULT_LATENESS_MS - 1, SPECS)
    assert (examples, kept) == ([], positive)
    examples, kept = expire(positive, p.horizon_end_ms + DEFAULT_LATENESS_MS, SPECS)
    assert [e.label for e in examples] == [1.0]
    assert kept == []


def test_examples_are_released_in_order_of_horizon_end() -> None:
    pending = [pending_for(CHURN_RISK, T0), pending_for(PURCHASE_PROPENSITY, T0 + DAY_MS), pending_for(CLV_90D, T0)]
    examples, _ = expire(pending, day(1000), SPECS)
    assert [e.model for e in examples] == [PURCHASE_PROPENSITY, CHURN_RISK, CLV_90D]


def test_activity_snapshots_are_taken_at_most_once_a_day_per_model_and_only_at_the_newest_event() -> None:
    state = new_profile(CUSTOMER, CUSTOMER)
    pending: list[Pending] = []
    taken: list[Pending] = []
    events = [click(1, day(0)), click(2, day(0.5)), click(3, day(1.2)), click(4, day(0.9))]  # the last is late
    for event in events:
        state = folded([*(e for e in events if to_ms(e.timestamp) <= to_ms(event.timestamp))])
        if event is events[3]:
            state = folded(events)  # the late click lands in a state that already holds day 1.2
        new = take_snapshots(state, event, pending, SPECS, CONFIG)
        taken += new
        pending += new
    by_model = {m: sorted(p.taken_at_ms for p in taken if p.model == m) for m in SPECS}
    assert by_model[PURCHASE_PROPENSITY] == [day(0), day(1.2)]
    assert by_model[CHURN_RISK] == [day(0), day(1.2)]
    assert by_model[CLV_90D] == [day(0)]  # a week between CLV activity snapshots
    assert by_model[EMAIL_OPEN] == []


def test_a_sent_email_is_snapshotted_once_with_its_message_id() -> None:
    sent = email(1, T0, "sent", message="m-7")
    state = folded([click(0, T0 - HOUR_MS), sent])
    first = take_snapshots(state, sent, [], SPECS, CONFIG)
    assert [(p.model, p.message_id, p.horizon_end_ms) for p in first] == [(EMAIL_OPEN, "m-7", T0 + 48 * HOUR_MS)]
    assert take_snapshots(state, sent, first, SPECS, CONFIG) == []  # redelivered: nothing new


def test_census_instants_are_one_period_apart_and_spread_by_profile() -> None:
    spec = SPECS[CHURN_RISK]
    phases = {census_instants(f"c-{i}", spec, T0, T0 + spec.census_every_ms)[0] for i in range(50)}
    assert len(phases) > 40
    found = census_instants(CUSTOMER, spec, T0, T0 + 10 * spec.census_every_ms)
    assert len(found) == 10
    assert census_instants(CUSTOMER, spec, found[0] - 1, found[0]) == [found[0]]
    assert census_instants(CUSTOMER, spec, found[0], found[0]) == []


def customer_history(seed: int) -> list[AnyEvent]:
    """Bursts of activity with long silences over ~100 days, in event-time order."""
    rng = random.Random(seed)
    events: list[AnyEvent] = []
    t = T0
    n = 0
    while t < day(100):
        t += rng.choice([HOUR_MS, 5 * HOUR_MS, 2 * DAY_MS, 9 * DAY_MS, 20 * DAY_MS])
        n += 1
        kind = rng.random()
        if kind < 0.6:
            events.append(click(n, t))
        elif kind < 0.8:
            events.append(order(n, t, total=rng.choice([10.0, 35.5, 80.0])))
        else:
            events.append(email(n, t, "sent", message=f"m-{n}"))
            if rng.random() < 0.5:
                events.append(email(-n, t + HOUR_MS, "opened", message=f"m-{n}"))
                t += HOUR_MS
    return events


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_census_instant_is_taken_exactly_once_from_the_state_as_it_was(seed: int) -> None:
    events = customer_history(seed)
    worker = Worker(SPECS)
    worker.run(events, until_ms=day(300))
    first = to_ms(events[0].timestamp)
    for name in (PURCHASE_PROPENSITY, CHURN_RISK, CLV_90D):
        taken = sorted(p.taken_at_ms for p in worker.snapshots if p.model == name and p.trigger == "census")
        assert taken == census_instants(CUSTOMER, SPECS[name], first - 1, day(300)), name
    for p in worker.snapshots:
        before = folded(e for e in events if to_ms(e.timestamp) <= p.taken_at_ms)
        assert p.features == FeatureVector.of(features(before, p.taken_at_ms, CONFIG)), p.snapshot_id


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_example_knows_its_label_before_its_features_were_taken(seed: int) -> None:
    examples = Worker(SPECS).run(customer_history(seed), until_ms=day(300))
    assert {e.model for e in examples} == set(SPECS)
    assert all(e.taken_at_ms < e.label_known_ms <= e.horizon_end_ms for e in examples)
    assert len({e.example_id for e in examples}) == len(examples)
