"""The four scores: what each predicts, over which horizon, with which River pipeline and fallback.

A spec is data: the label is named by its ``outcome`` (``labels`` resolves it), the model is built by a
factory (a fresh, unfitted pipeline each call), and the cold-start heuristic is a documented formula of the
features, served until the model has learned from ``min_examples`` labelled examples.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from profiles.config import DAY_MS, HOUR_MS

Task = Literal["binary", "regression"]
#: What the label measures over the horizon ``(taken_at, taken_at + horizon]``:
#: ``order``: 1 if an order happens; ``no_activity``: 1 if no customer-initiated event happens;
#: ``net_spend``: orders minus refunds, in base-currency major units, floored at 0;
#: ``open``: 1 if the email the snapshot was taken for is opened.
Outcome = Literal["order", "no_activity", "net_spend", "open"]
#: ``activity``: on the customer's activity (at most once per ``activity_gap_ms``) and on a census cadence;
#: ``email_sent``: when an email is sent to the customer.
Trigger = Literal["activity", "email_sent"]

PURCHASE_PROPENSITY: Final = "purchase_propensity"
CHURN_RISK: Final = "churn_risk"
CLV_90D: Final = "clv_90d"
EMAIL_OPEN: Final = "email_open"


#: The classifiers' SGD step.
CLASSIFIER_STEP: Final = 0.002


# River is imported by the factories, not here: the fold, the replay and most commands read the specs (their
# horizons and triggers) and never build a model, and River with SciPy takes ~0.9 s to import.
#: River's modules the models and their snapshots use.
RIVER_MODULES: Final = (
    "compose", "drift", "dummy", "linear_model", "metrics", "optim", "preprocessing", "stats", "utils",
)  # fmt: skip


def import_river() -> None:
    """Import River's modules now: a server calls this at start, so that its first score (a snapshot
    unpickled) does not take the import's ~0.9 s."""
    for name in RIVER_MODULES:
        importlib.import_module(f"river.{name}")


def classifier() -> Any:
    """Standardised features into an online logistic regression (SGD, step 0.002: River's default 0.01
    overshoots on these tens of thousands of correlated examples; docs/models.md has the comparison)."""
    from river import compose, linear_model, optim, preprocessing  # noqa: PLC0415

    return compose.Pipeline(
        preprocessing.StandardScaler(), linear_model.LogisticRegression(optimizer=optim.SGD(CLASSIFIER_STEP))
    )


def hurdle_spend() -> Any:
    """The spend regressor (``profiles.models.spend``)."""
    from profiles.models.spend import HurdleSpend  # noqa: PLC0415

    return HurdleSpend()


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    task: Task
    outcome: Outcome
    horizon_ms: int
    trigger: Trigger
    #: The one feature of the recency-only baseline.
    recency_feature: str
    #: ``cold_start(features, horizon_days)``: the score served before the model has learned enough.
    cold_start: Callable[[Mapping[str, float], float], float]
    build: Callable[[], Any]
    #: Labelled examples the model must have learned before its scores replace the heuristic.
    min_examples: int = 500
    #: Activity snapshots of one customer are at least this far apart (``activity`` trigger).
    activity_gap_ms: int = DAY_MS
    #: Census cadence (``activity`` trigger): every customer is snapshotted once per period.
    census_every_ms: int = 7 * DAY_MS

    def __post_init__(self) -> None:
        # The activity rule finds the last activity snapshot among the pending ones, so they must outlive the gap.
        if self.horizon_ms < self.activity_gap_ms:
            raise ValueError(f"{self.name}: horizon shorter than the activity snapshot gap")

    @property
    def horizon_days(self) -> float:
        return self.horizon_ms / DAY_MS


def purchase_heuristic(f: Mapping[str, float], horizon_days: float) -> float:
    """P(≥1 order in the horizon) if orders arrive as a Poisson process at the last 90 days' rate.

    A tenth of an order per 90 days is added so that non-buyers get a small, not zero, probability.

    >>> round(purchase_heuristic({"w90d_orders": math.log1p(9)}, 7.0), 3)
    0.507
    """
    rate_per_day = (math.expm1(f["w90d_orders"]) + 0.1) / 90
    return 1.0 - math.exp(-rate_per_day * horizon_days)


def churn_heuristic(f: Mapping[str, float], horizon_days: float) -> float:
    """P(no activity in the horizon) if activity is Poisson at the last 30 days' rate.

    >>> churn_heuristic({"w30d_clicks": 0.0, "w30d_email_opens": 0.0, "w30d_email_clicks": 0.0,
    ...                  "w30d_orders": 0.0, "w30d_mentions": 0.0}, 30.0)
    1.0
    """
    recent = sum(
        math.expm1(f[f"w30d_{metric}"]) for metric in ("clicks", "email_opens", "email_clicks", "orders", "mentions")
    )
    return math.exp(-recent * horizon_days / 30)


def clv_heuristic(f: Mapping[str, float], horizon_days: float) -> float:
    """The net spend of the last 90 days, scaled to the horizon: the next 90 days look like the last 90.

    >>> round(clv_heuristic({"w90d_spend": math.log1p(120.0)}, 90.0), 6)
    120.0
    """
    return math.expm1(f["w90d_spend"]) * horizon_days / 90


#: Beta prior of the email heuristic: a 25% open rate, worth two deliveries.
OPEN_PRIOR_RATE: Final = 0.25
OPEN_PRIOR_WEIGHT: Final = 2.0


def email_open_heuristic(f: Mapping[str, float], horizon_days: float) -> float:
    """The customer's open rate shrunk toward ``OPEN_PRIOR_RATE``: ``(opens + 0.5) / (delivered + 2)``.

    (The horizon does not enter: it is the fixed 48 h of the definition.)

    >>> email_open_heuristic({"email_delivered": 0.0, "email_open_rate": 0.0}, 2.0)
    0.25
    >>> round(email_open_heuristic({"email_delivered": math.log1p(8), "email_open_rate": 1.0}, 2.0), 3)
    0.85
    """
    delivered = math.expm1(f["email_delivered"])
    opens = f["email_open_rate"] * delivered
    return (opens + OPEN_PRIOR_RATE * OPEN_PRIOR_WEIGHT) / (delivered + OPEN_PRIOR_WEIGHT)


def default_specs(
    *,
    purchase_horizon_days: float = 7.0,
    churn_horizon_days: float = 30.0,
    clv_horizon_days: float = 90.0,
    email_open_hours: float = 48.0,
    min_examples: int = 500,
) -> dict[str, ModelSpec]:
    """The four specs by name, with configurable horizons.

    >>> sorted(default_specs())
    ['churn_risk', 'clv_90d', 'email_open', 'purchase_propensity']
    >>> default_specs(purchase_horizon_days=14)["purchase_propensity"].horizon_days
    14.0
    """
    specs = [
        ModelSpec(
            name=PURCHASE_PROPENSITY,
            task="binary",
            outcome="order",
            horizon_ms=round(purchase_horizon_days * DAY_MS),
            trigger="activity",
            recency_feature="days_since_last_seen",
            cold_start=purchase_heuristic,
            build=classifier,
            min_examples=min_examples,
        ),
        ModelSpec(
            name=CHURN_RISK,
            task="binary",
            outcome="no_activity",
            horizon_ms=round(churn_horizon_days * DAY_MS),
            trigger="activity",
            recency_feature="days_since_last_seen",
            cold_start=churn_heuristic,
            build=classifier,
            min_examples=min_examples,
        ),
        ModelSpec(
            name=CLV_90D,
            task="regression",
            outcome="net_spend",
            horizon_ms=round(clv_horizon_days * DAY_MS),
            trigger="activity",
            recency_feature="days_since_last_purchase",
            cold_start=clv_heuristic,
            build=hurdle_spend,
            min_examples=min_examples,
            # 90-day horizons overlap a lot: a snapshot a week per active customer keeps pending bounded.
            activity_gap_ms=7 * DAY_MS,
            census_every_ms=14 * DAY_MS,
        ),
        ModelSpec(
            name=EMAIL_OPEN,
            task="binary",
            outcome="open",
            horizon_ms=round(email_open_hours * HOUR_MS),
            trigger="email_sent",
            recency_feature="days_since_last_open",
            cold_start=email_open_heuristic,
            build=classifier,
            min_examples=min_examples,
        ),
    ]
    return {spec.name: spec for spec in specs}
