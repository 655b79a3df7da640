"""Typed events and a reference worker loop for the model tests: the fold, snapshots, labels, by event time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from profiles.config import DAY_MS, FoldConfig
from profiles.fold import apply
from profiles.models.labels import Example, Pending, expire, resolve_on_event
from profiles.models.policy import census_before_event, census_on_watermark, take_snapshots
from profiles.models.specs import ModelSpec
from profiles.state import ProfileState, new_profile
from profiles.timeutil import from_ms, to_ms
from schemas.events import (
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
T0 = 1_740_009_600_000  # 2025-02-20T00:00:00Z
CUSTOMER = "c-1"


def click(n: int, ms: int, action: ClickAction = "product_view", category: str = "shoes") -> ClickEvent:
    return ClickEvent(
        event_id=f"e-{n}",
        customer_id=CUSTOMER,
        timestamp=from_ms(ms),
        action=action,
        url="/p",
        session_id=f"s-{n}",
        category=category,
    )


def order(n: int, ms: int, total: float = 40.0, action: PurchaseAction = "order") -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"e-{n}",
        customer_id=CUSTOMER,
        timestamp=from_ms(ms),
        action=action,
        order_id=f"o-{n}",
        currency="EUR",
        total=total,
        items=[LineItem(product_id="p-1", category="shoes", quantity=1, unit_price=total)],
    )


def email(n: int, ms: int, action: EmailAction, message: str = "m-1") -> EmailEvent:
    return EmailEvent(
        event_id=f"e-{n}",
        customer_id=CUSTOMER,
        timestamp=from_ms(ms),
        action=action,
        campaign_id="k",
        message_id=message,
    )


def identify(n: int, ms: int, birth_year: int | None = None) -> IdentifyEvent:
    return IdentifyEvent(
        event_id=f"e-{n}", customer_id=CUSTOMER, timestamp=from_ms(ms), traits=Traits(birth_year=birth_year)
    )


def folded(events: Iterable[AnyEvent]) -> ProfileState:
    state = new_profile(CUSTOMER, CUSTOMER)
    for event in events:
        apply(state, event, CONFIG)
    return state


@dataclass
class Worker:
    """The owning worker's per-customer loop, as ``profiles.models.policy`` documents it.

    The watermark trails the newest event time seen by ``lag_ms``; each advance runs the census timer and
    releases expired examples before the next event is folded.
    """

    specs: Mapping[str, ModelSpec]
    lag_ms: int
    state: ProfileState = field(default_factory=lambda: new_profile(CUSTOMER, CUSTOMER))
    pending: list[Pending] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    snapshots: list[Pending] = field(default_factory=list)
    watermark: int = 0
    newest: int = 0

    def advance(self, watermark: int) -> None:
        if watermark <= self.watermark:
            return
        taken = census_on_watermark(self.state, self.watermark, watermark, self.specs, CONFIG)
        self.snapshots += taken
        self.pending += taken
        released, self.pending = expire(self.pending, watermark, self.specs)
        self.examples += released
        self.watermark = watermark

    def feed(self, event: AnyEvent) -> None:
        ts = to_ms(event.timestamp)
        self.newest = max(self.newest, ts)
        self.advance(self.newest - self.lag_ms)
        taken = census_before_event(self.state, ts, self.watermark, self.specs, CONFIG)
        self.snapshots += taken
        self.pending += taken
        if apply(self.state, event, CONFIG):
            self.pending = resolve_on_event(self.pending, event, self.specs, CONFIG)
            new = take_snapshots(self.state, event, self.pending, self.specs, CONFIG)
            self.snapshots += new
            self.pending += new

    def run(self, events: Sequence[AnyEvent], until_ms: int) -> list[Example]:
        for event in events:
            self.feed(event)
        self.advance(until_ms)
        return self.examples


def day(n: float) -> int:
    return T0 + round(n * DAY_MS)
