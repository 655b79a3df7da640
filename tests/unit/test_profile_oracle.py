"""The profile fold against the independent oracle, and against itself in another arrival order."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

import msgspec
import orjson
import pytest

from profiles.config import HOUR_MS, FoldConfig
from profiles.identity import Arrival
from profiles.offline import OfflineFolder
from profiles.rfm import RfmRanks, RfmScores
from profiles.state import ProfileState
from profiles.view import render
from schemas.profile import ProfileView
from schemas.resolved import RawSource
from schemas.validation import Rejection, ValidationLimits, validate_event
from services.simulator import Simulation, SimulationConfig
from tests.oracle import OracleSettings, build_profiles, diff_profiles

CONFIG = FoldConfig()


def arrivals(customers: int, days: int, seed: int) -> list[Arrival]:
    now = datetime.now(UTC)
    out = []
    for offset, line in enumerate(Simulation(SimulationConfig(customers=customers, days=days, seed=seed)).lines()):
        event = validate_event(line, now=now, limits=ValidationLimits())
        if not isinstance(event, Rejection):
            out.append(Arrival(RawSource("events.raw", 0, offset), line, event))
    return out


def views(states: dict[str, ProfileState], as_of_ms: int) -> dict[str, dict[str, object]]:
    """Render every profile, with RFM ranks computed over this population (as the Redis sets would)."""
    buyers = [s for s in states.values() if s.orders and s.last_purchase_ms is not None]

    def ranks(s: ProfileState) -> RfmScores | None:
        if not s.orders or s.last_purchase_ms is None:
            return None
        net = s.gross_cents - s.refunded_cents
        return RfmRanks(
            len(buyers),
            sum(b.last_purchase_ms < s.last_purchase_ms for b in buyers if b.last_purchase_ms is not None),
            sum(b.orders < s.orders for b in buyers),
            sum(b.gross_cents - b.refunded_cents < net for b in buyers),
        ).scores()

    return {pid: render(s, as_of_ms, CONFIG, rfm=ranks(s)) for pid, s in states.items()}


def fold(items: list[Arrival], config: FoldConfig = CONFIG) -> dict[str, ProfileState]:
    folder = OfflineFolder(config)
    folder.feed(items)
    return folder.profiles()


def whole_hour_after(states: dict[str, ProfileState], extra_hours: int = 0) -> int:
    latest = max(s.last_event_ms for s in states.values() if s.last_event_ms is not None)
    return (-(-latest // HOUR_MS) + extra_hours) * HOUR_MS


@pytest.mark.parametrize(("customers", "days", "seed"), [(300, 40, 5), (120, 100, 9)])
def test_every_field_of_every_profile_equals_the_oracle(customers: int, days: int, seed: int) -> None:
    items = arrivals(customers, days, seed)
    states = fold(items)
    for extra in (0, 5, 24 * 45):  # at the end, a few hours later, and after windows have emptied
        as_of = whole_hour_after(states, extra)
        oracle = build_profiles([orjson.loads(a.raw) for a in items], as_of_ms=as_of, settings=OracleSettings())
        assert diff_profiles(oracle, views(states, as_of)) == []


def test_with_one_anonymous_id_and_two_emails_a_customer_every_field_still_equals_the_oracle() -> None:
    """The link limits: a customer's second anonymous id stays a visitor of its own, with its activity; a
    third email is neither listed nor linked."""
    items = arrivals(200, 40, 6)
    named = next(a for a in items if a.event.type == "identify" and b'"email"' in a.raw)
    for n in range(3):
        line = orjson.dumps({**orjson.loads(named.raw), "event_id": f"x-{n}", "traits": {"email": f"x{n}@y.org"}})
        event = validate_event(line, now=datetime.now(UTC), limits=ValidationLimits())
        assert not isinstance(event, Rejection)
        items.append(Arrival(RawSource("events.raw", 0, len(items)), line, event))
    states = fold(items, replace(CONFIG, max_anonymous_ids=1, max_emails=2))
    as_of = whole_hour_after(states)
    raw = [orjson.loads(a.raw) for a in items]
    oracle = build_profiles(raw, as_of_ms=as_of, settings=OracleSettings(max_anonymous_ids=1, max_emails=2))
    assert diff_profiles(oracle, views(states, as_of)) == []
    limited = [s for s in states.values() if s.links_refused]
    assert limited, "no customer of this simulation claims a second anonymous id: the limit is not exercised"
    assert all(len(s.anonymous_ids) == 1 for s in limited)
    customer = states[str(named.event.customer_id)]
    assert (len(customer.emails), customer.emails_refused) == (2, 2)
    unlimited = build_profiles(raw, as_of_ms=as_of, settings=OracleSettings())
    assert len(oracle) > len(unlimited), "the refused ids' visitors should remain profiles of their own"


def test_arrival_order_does_not_change_any_profile() -> None:
    """The same events arriving in another order — each up to 3 days late, re-sends right after their
    original (the bounded memories' documented reach) — give the same profiles."""
    items = arrivals(150, 30, 3)
    baseline = fold(items)
    as_of = whole_hour_after(baseline)
    rng = random.Random(1)
    delay: dict[str, float] = {}
    for item in items:
        delay.setdefault(item.event.event_id, item.event.timestamp.timestamp() + rng.uniform(0, 3 * 86_400))
    reordered = sorted(items, key=lambda a: delay[a.event.event_id])
    reproduced = [Arrival(RawSource("events.raw", 0, i), a.raw, a.event) for i, a in enumerate(reordered)]
    assert reordered != items
    assert diff_profiles(views(baseline, as_of), views(fold(reproduced), as_of)) == []


def test_rendered_profiles_conform_to_the_published_profile_schema() -> None:
    states = fold(arrivals(120, 40, 4))
    as_of = whole_hour_after(states)
    decoder = msgspec.json.Decoder(ProfileView)
    for view in views(states, as_of).values():
        decoder.decode(orjson.dumps(view))  # raises on any field the contract does not allow
