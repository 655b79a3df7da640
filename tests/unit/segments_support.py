"""Profiles for the segment tests, built through the real fold and renderer from typed events."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any, cast

from profiles.config import DAY_MS, HOUR_MS, FoldConfig
from profiles.fold import apply
from profiles.state import ProfileState, new_profile
from profiles.timeutil import from_ms
from profiles.view import render
from schemas.events import (
    CLICK_ACTIONS,
    AnyEvent,
    ClickAction,
    ClickEvent,
    EmailAction,
    EmailEvent,
    IdentifyEvent,
    LineItem,
    PurchaseAction,
    PurchaseEvent,
    Traits,
)

CONFIG = FoldConfig()
T0 = 1_740_000_000_000  # 2025-02-19T21:20:00Z
CATEGORIES = ("shoes", "books", "garden")


def at(ms: int) -> datetime:
    return from_ms(ms).astimezone(UTC)


def click(n: int, ms: int, action: ClickAction = "product_view", category: str | None = "shoes") -> ClickEvent:
    return ClickEvent(
        event_id=f"e-{n}",
        customer_id="c-1",
        timestamp=at(ms),
        action=action,
        url="/p",
        session_id=f"s-{n % 3}",
        category=category,
    )


def order(
    n: int, ms: int, total: float = 40.0, category: str = "shoes", action: PurchaseAction = "order"
) -> PurchaseEvent:
    items = [LineItem(product_id="p-1", category=category, quantity=1, unit_price=total)]
    return PurchaseEvent(
        event_id=f"e-{n}",
        customer_id="c-1",
        timestamp=at(ms),
        action=action,
        order_id=f"o-{n}",
        currency="EUR",
        total=total,
        items=items,
    )


def email(n: int, ms: int, action: EmailAction) -> EmailEvent:
    return EmailEvent(
        event_id=f"e-{n}", customer_id="c-1", timestamp=at(ms), action=action, campaign_id="k", message_id=f"m-{n}"
    )


def identify(n: int, ms: int, **traits: Any) -> IdentifyEvent:
    return IdentifyEvent(event_id=f"e-{n}", customer_id="c-1", timestamp=at(ms), traits=Traits(**traits))


def fold(*events: AnyEvent) -> ProfileState:
    state = new_profile("c-1", "c-1")
    for event in events:
        assert apply(state, event, CONFIG)
    return state


def view(state: ProfileState, as_of_ms: int | None = None) -> dict[str, Any]:
    assert state.last_event_ms is not None
    return render(state, as_of_ms if as_of_ms is not None else state.last_event_ms, CONFIG)


def random_profile(rng: random.Random, span_days: int = 40, buyer: bool = True) -> ProfileState:
    """A customer with a random mix of clicks, orders, refunds and emails over ``span_days`` before T0."""
    events: list[AnyEvent] = []
    for n in range(rng.randint(1, 30)):
        ms = T0 - rng.randint(0, span_days * DAY_MS) + rng.choice((0, 1, -1, HOUR_MS))
        kind = rng.random()
        if kind < 0.6:
            events.append(click(n, ms, cast(ClickAction, rng.choice(CLICK_ACTIONS)), rng.choice((*CATEGORIES, None))))
        elif kind < 0.75 and buyer:
            events.append(order(n, ms, rng.choice((10.0, 25.5, 99.99)), rng.choice(CATEGORIES)))
        elif kind < 0.8 and buyer:
            events.append(order(n, ms, 10.0, action="refund"))
        else:
            events.append(email(n, ms, rng.choice(("delivered", "opened", "clicked"))))
    return fold(*events)
