"""The model features: defined values on hand-built profiles, one key set for every profile, agreement
with the profile view, and refusal to look at a state from before its latest event."""

from __future__ import annotations

import math
import random

import pytest

from profiles.config import DAY_MS, HOUR_MS
from profiles.features import DAY_CAP, FeaturesBeforeLastEventError, features
from profiles.rfm import RfmRanks
from profiles.state import new_profile
from profiles.view import render
from schemas.events import AnyEvent
from tests.unit.models_support import CONFIG, T0, click, email, folded, identify, order


def history() -> list[AnyEvent]:
    return [
        click(1, T0, "product_view"),
        click(2, T0 + HOUR_MS, "add_to_cart"),
        order(3, T0 + 2 * HOUR_MS, total=30.0),
        order(4, T0 + 3 * DAY_MS, total=50.0),
        order(5, T0 + 3 * DAY_MS + 1, total=20.0, action="refund"),
        email(6, T0 + 4 * DAY_MS, "delivered"),
        email(7, T0 + 4 * DAY_MS + 1, "delivered", message="m-2"),
        email(8, T0 + 4 * DAY_MS + 2, "opened"),
        identify(9, T0 + 5 * DAY_MS, birth_year=1990),
    ]


def test_a_profile_with_purchases_emails_and_traits_has_its_documented_features() -> None:
    as_of = T0 + 10 * DAY_MS
    f = features(folded(history()), as_of, CONFIG)
    assert f["has_purchased"] == 1.0
    assert f["frequency"] == pytest.approx(math.log1p(2))
    assert f["monetary"] == pytest.approx(math.log1p(60.0))  # 30 + 50 − 20 net
    assert f["aov"] == pytest.approx(math.log1p(40.0))
    assert f["refund_share"] == 0.5
    assert f["days_since_last_purchase"] == pytest.approx(7.0)
    assert f["days_since_last_seen"] == pytest.approx(5.0)
    assert f["days_since_first_seen"] == pytest.approx(10.0)
    assert f["email_open_rate"] == 0.5
    assert f["email_delivered"] == pytest.approx(math.log1p(2))
    assert f["w7d_orders"] == 0.0  # the order exactly 7 days before is outside (as_of − 7d, as_of]
    assert f["w30d_orders"] == pytest.approx(math.log1p(2))
    assert f["w30d_spend"] == pytest.approx(math.log1p(60.0))
    assert f["w30d_add_to_carts"] == pytest.approx(math.log1p(1))
    assert f["has_age"] == 1.0
    assert f["age_years"] == 35.0
    assert f["stage_retention"] == 1.0
    assert sum(v for k, v in f.items() if k.startswith("stage_")) == 1.0
    assert f["top_affinity"] > 0


def test_every_profile_has_the_same_keys_in_the_same_order_and_finite_values() -> None:
    empty = features(new_profile("c-1", "c-1"), T0, CONFIG)
    rich = features(folded(history()), T0 + 10 * DAY_MS, CONFIG)
    assert list(empty) == list(rich)
    assert all(math.isfinite(v) for v in [*empty.values(), *rich.values()])
    assert empty["days_since_last_seen"] == DAY_CAP
    assert empty["has_purchased"] == 0.0


def test_the_journey_stage_one_hot_agrees_with_the_profile_view() -> None:
    state = folded(history())
    for days in (5, 30, 66, 200):
        as_of = T0 + days * DAY_MS
        f = features(state, as_of, CONFIG)
        stage = render(state, as_of, CONFIG)["journey_stage"]
        assert f[f"stage_{stage}"] == 1.0, days


def test_window_features_are_the_views_window_counts() -> None:
    state = folded(history())
    as_of = T0 + 5 * DAY_MS + HOUR_MS
    view = render(state, as_of, CONFIG)["windows"]
    f = features(state, as_of, CONFIG)
    for window in ("24h", "7d", "30d", "90d"):
        for metric in ("clicks", "orders", "email_opens", "mentions"):
            assert f[f"w{window}_{metric}"] == pytest.approx(math.log1p(view[window][metric])), (window, metric)


def test_features_do_not_depend_on_the_order_events_were_folded_in() -> None:
    events = history()
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    as_of = T0 + 12 * DAY_MS
    assert features(folded(events), as_of, CONFIG) == features(folded(shuffled), as_of, CONFIG)


def test_an_instant_before_the_latest_event_is_refused() -> None:
    state = folded(history())
    with pytest.raises(FeaturesBeforeLastEventError):
        features(state, T0 + DAY_MS, CONFIG)


def test_rfm_scores_are_added_only_when_ranks_are_given() -> None:
    state = folded(history())
    as_of = T0 + 10 * DAY_MS
    assert "r_score" not in features(state, as_of, CONFIG)
    f = features(state, as_of, CONFIG, RfmRanks(buyers=10, worse_recency=9, worse_frequency=0, worse_monetary=4))
    assert (f["r_score"], f["f_score"], f["m_score"]) == (5.0, 1.0, 3.0)
    non_buyer = features(new_profile("c-2", "c-2"), as_of, CONFIG, RfmRanks(10, 9, 9, 9))
    assert non_buyer["r_score"] == 0.0


def test_an_implausible_birth_year_is_no_age() -> None:
    f = features(folded([identify(1, T0, birth_year=1900)]), T0, CONFIG)
    assert (f["has_age"], f["age_years"]) == (0.0, 0.0)


def test_a_frequent_visitor_gone_quiet_is_more_surprising_than_an_occasional_one() -> None:
    """``silence_surprise`` = visits a day × days of silence: ten days without the daily visitor's visit is
    news, ten days without the monthly visitor's is not; both have the same recency."""
    daily = folded([click(n, T0 + n * DAY_MS) for n in range(30)])  # one session a day for 30 days
    monthly = folded([click(n, T0 + n * 15 * DAY_MS) for n in range(3)])  # one every 15 days
    f_daily = features(daily, T0 + 29 * DAY_MS + 10 * DAY_MS, CONFIG)
    f_monthly = features(monthly, T0 + 30 * DAY_MS + 10 * DAY_MS, CONFIG)
    assert f_daily["days_since_last_seen"] == pytest.approx(10.0)
    assert f_monthly["days_since_last_seen"] == pytest.approx(10.0)
    # 30 sessions over 29 days (+ the prior's 0.5 over 1 day) vs 3 over 30 days.
    assert f_daily["activity_rate"] == pytest.approx(math.log(30.5 / 30.0))
    assert f_monthly["activity_rate"] == pytest.approx(math.log(3.5 / 31.0))
    assert f_daily["silence_surprise"] == pytest.approx(10 * 30.5 / 30.0)
    assert f_monthly["silence_surprise"] == pytest.approx(10 * 3.5 / 31.0)
    assert f_daily["log_days_since_last_seen"] == pytest.approx(math.log1p(10.0))
