"""Ground truth: per person, the latent traits and day-by-day arrays of the true generative quantities.

Arrays have one entry per simulated day for ``days + truth_horizon`` days: the first ``days`` cover the
emitted stream, the rest continue the same process without emitting anything, so that "what happens in the
next 90 days" has ground truth at every emitted day. All of a day's quantities are conditional on the latent
state at the start of that day (arrived, alive, engagement, recency, cart, identity, email suppression):

* ``p_order``: P(at least one order that day); ``expected_orders``: E[number of orders].
* ``expected_spend``: expected value of the orders placed that day net of their expected later refunds.
* ``p_active``: P(any customer-initiated event that day: a click, an email open or a social mention).
  ESP sends/deliveries/bounces and shop refunds are not customer-initiated.
* ``p_open``: P(open | a campaign email is delivered that day); 0 before arrival and after churn.
* ``engagement``: the multiplicative engagement state; ``hazard``: P(going silent from the next day on).
* Realised outcomes of the same draws: ``orders`` (count placed that day), ``gross`` (sum of their totals),
  ``refunded`` (refund totals dated that day). Money is in the person's ``currency``.
"""

from __future__ import annotations

from array import array
from typing import Any

import orjson

from services.simulator.clock import DAY_MS, UTC_Z, format_ts
from services.simulator.population import Person

FLOAT_SERIES = ("p_order", "expected_orders", "expected_spend", "p_active", "p_open", "engagement", "hazard")
MONEY_SERIES = ("gross", "refunded")


class PersonTruth:
    """Truth arrays for one person, filled day by day."""

    __slots__ = (
        "churn_day",
        "engagement",
        "expected_orders",
        "expected_spend",
        "gross",
        "hazard",
        "identified_day",
        "identified_ms",
        "orders",
        "p_active",
        "p_open",
        "p_order",
        "refunded",
    )

    def __init__(self, n_days: int) -> None:
        # probabilities and expectations in single precision (they are written with 6 decimals), money in double
        probabilities = array("f", bytes(4 * n_days))
        money = array("d", bytes(8 * n_days))
        self.p_order = array("f", probabilities)
        self.expected_orders = array("f", probabilities)
        self.expected_spend = array("f", probabilities)
        self.p_active = array("f", probabilities)
        self.p_open = array("f", probabilities)
        self.engagement = array("f", probabilities)
        self.hazard = array("f", probabilities)
        self.gross = array("d", money)
        self.refunded = array("d", money)
        self.orders = array("H", bytes(2 * n_days))
        self.churn_day: int | None = None
        self.identified_day: int | None = None
        self.identified_ms: int | None = None


def truth_record(person: Person, truth: PersonTruth, *, start_ms: int, days: int, horizon: int) -> dict[str, Any]:
    """The JSON-ready ground-truth record of one person."""
    record: dict[str, Any] = {
        "index": person.index,
        "customer_id": person.customer_id,
        "anonymous_ids": list(person.anonymous_ids),
        "identified_at": None if truth.identified_ms is None else format_ts(truth.identified_ms, UTC_Z),
        "identified_day": truth.identified_day,
        "churn_day": truth.churn_day,
        "churned_at": None if truth.churn_day is None else format_ts(start_ms + truth.churn_day * DAY_MS, UTC_Z),
        "currency": person.currency,
        "days": days,
        "truth_days": days + horizon,
        "traits": person.traits(),
        "identify_traits": person.identify_traits if person.customer_id is not None else None,
    }
    for name in FLOAT_SERIES:
        record[name] = [round(x, 6) for x in getattr(truth, name)]
    for name in MONEY_SERIES:
        record[name] = [round(x, 2) for x in getattr(truth, name)]
    record["orders"] = list(truth.orders)
    return record


def truth_line(person: Person, truth: PersonTruth, *, start_ms: int, days: int, horizon: int) -> bytes:
    return orjson.dumps(truth_record(person, truth, start_ms=start_ms, days=days, horizon=horizon))
