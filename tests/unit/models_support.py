"""Typed events and a reference worker loop for the model tests: the fold, snapshots, labels, by event time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from profiles.config import DAY_MS, FoldConfig
from profiles.features import features
from profiles.fold import apply
from profiles.models.labels import Example, Pending, expire, resolve_on_event
from profiles.models.policy import census_instants, snapshot, take_snapshots
from profiles.models.specs import ModelSpec
from profiles.models.vectors import FeatureVector
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
    """The reference loop the worker must match, written from the definition in ``profiles.models.policy``:
    the customer's events folded in event-time order; before each event, the census instants since the
    previous one, from the state as it was; after it, the activity and email snapshots and the labels it
    decides; at the end, the examples whose horizon (plus lateness) ``until_ms`` passed."""

    specs: Mapping[str, ModelSpec]
    state: ProfileState = field(default_factory=lambda: new_profile(CUSTOMER, CUSTOMER))
    pending: list[Pending] = field(default_factory=list)
    snapshots: list[Pending] = field(default_factory=list)
    census_done: int | None = None  # every census instant at or before it was taken

    def census(self, until_ms: int) -> None:
        last = self.state.last_event_ms
        if last is not None:
            after = last - 1 if self.census_done is None else max(self.census_done, last - 1)
            for spec in self.specs.values():
                if spec.trigger != "activity":
                    continue
                for at in census_instants(CUSTOMER, spec, after, until_ms):
                    feats = FeatureVector.of(features(self.state, at, CONFIG))
                    self.snapshots.append(snapshot(self.state, spec, "census", at, feats))
                    self.pending.append(self.snapshots[-1])
        self.census_done = until_ms if self.census_done is None else max(self.census_done, until_ms)

    def run(self, events: Sequence[AnyEvent], until_ms: int) -> list[Example]:
        for event in sorted(events, key=lambda e: (to_ms(e.timestamp), e.event_id)):
            self.census(to_ms(event.timestamp) - 1)
            if apply(self.state, event, CONFIG):
                self.pending = resolve_on_event(self.pending, event, self.specs, CONFIG)
                new = take_snapshots(self.state, event, self.pending, self.specs, CONFIG)
                self.snapshots += new
                self.pending += new
        self.census(until_ms)
        examples, self.pending = expire(self.pending, until_ms, self.specs)
        return examples


def day(n: float) -> int:
    return T0 + round(n * DAY_MS)
