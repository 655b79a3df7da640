"""The profile oracle against views worked out by hand from ``docs/profile.md``.

The oracle (``tests/oracle``) is what the real fold is compared with, so it needs its own evidence: tiny
event lists whose every expected number is derived here, by hand, from the documentation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from tests.oracle import OracleSettings, build_profiles, diff_profiles
from tests.oracle.profiles import DAY_MS, HOUR_MS, compound, format_ms, parse_ms

SETTINGS = OracleSettings()
AS_OF = parse_ms("2025-03-10T12:00:00Z")  # a whole hour
MINUTE = 60_000
HALF_LIFE = 14 * DAY_MS


def at(ms: int) -> str:
    return format_ms(ms)


def ago(ms: int) -> str:
    return format_ms(AS_OF - ms)


def _ids(customer: str | None, anon: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if customer is not None:
        out["customer_id"] = customer
    if anon is not None:
        out["anonymous_id"] = anon
    return out


def click(
    eid: str,
    ts: str,
    action: str = "page_view",
    *,
    customer: str | None = None,
    anon: str | None = None,
    session: str = "s1",
    category: str | None = None,
) -> dict[str, Any]:
    e = {"event_id": eid, "type": "click", "timestamp": ts, "source": "web", "action": action}
    e |= _ids(customer, anon) | {"url": "https://shop.example/", "session_id": session}
    if category is not None:
        e |= {"product_id": f"sku-{category}", "category": category}
    return e


def email(eid: str, ts: str, action: str, customer: str = "c1") -> dict[str, Any]:
    return {
        "event_id": eid,
        "type": "email",
        "customer_id": customer,
        "timestamp": ts,
        "source": "esp",
        "action": action,
        "campaign_id": "camp",
        "message_id": f"m-{eid}",
    }


def purchase(
    eid: str,
    ts: str,
    action: str,
    total: float,
    items: Sequence[tuple[str, int, float]] = (),
    *,
    currency: str = "EUR",
    customer: str = "c1",
) -> dict[str, Any]:
    return {
        "event_id": eid,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": ts,
        "source": "shop",
        "action": action,
        "order_id": f"o-{eid}",
        "currency": currency,
        "total": total,
        "items": [{"product_id": f"sku-{c}", "category": c, "quantity": q, "unit_price": p} for c, q, p in items],
    }


def mention(eid: str, ts: str, text: str, customer: str = "c1") -> dict[str, Any]:
    return {
        "event_id": eid,
        "type": "social_mention",
        "customer_id": customer,
        "timestamp": ts,
        "source": "social",
        "platform": "x",
        "text": text,
        "url": "https://x.example/p",
        "author_handle": "@jo",
    }


def identify(eid: str, ts: str, customer: str, anon: str | None = None, **traits: Any) -> dict[str, Any]:
    return {"event_id": eid, "type": "identify", "timestamp": ts, "traits": traits} | _ids(customer, anon)


def build(events: list[dict[str, Any]], as_of: int = AS_OF) -> dict[str, dict[str, Any]]:
    return build_profiles(events, as_of_ms=as_of, settings=SETTINGS)


def decay(age_ms: int) -> float:
    return float(2 ** (-age_ms / HALF_LIFE))


ZERO_WINDOW = {
    "clicks": 0,
    "product_views": 0,
    "add_to_carts": 0,
    "orders": 0,
    "spend": 0.0,
    "email_opens": 0,
    "email_clicks": 0,
    "mentions": 0,
}


# ------------------------------------------------------------------------------------------------ time


def test_timestamps_parse_offsets_truncate_sub_ms_and_format_utc() -> None:
    assert format_ms(parse_ms("2025-03-14T19:02:11.520+01:00")) == "2025-03-14T18:02:11.520Z"
    assert format_ms(parse_ms("2025-03-14T18:02:11.5209Z")) == "2025-03-14T18:02:11.520Z"
    assert format_ms(parse_ms("2025-03-14T13:02:11-05:00")) == "2025-03-14T18:02:11.000Z"
    assert parse_ms("1970-01-01T00:00:01.001Z") == 1001


def test_as_of_before_an_event_is_refused() -> None:
    with pytest.raises(ValueError, match="before"):
        build([click("e1", ago(-1), customer="c1")])


# ------------------------------------------------------------------------------------------------ one whole view


def test_full_view_of_an_anonymous_visitor_who_identifies() -> None:
    """Activity before and after the link, a late event, a duplicate, a timestamp with an offset."""
    events = [
        click("e1", "2025-03-07T12:00:00Z", anon="a1"),
        click("e2", "2025-03-07T13:05:00.250+01:00", "product_view", anon="a1", category="shoes"),
        identify("e3", "2025-03-07T12:10:00Z", "c1", "a1", email="Jo@Example.COM", name="Jo Doe"),
        identify("e3", "2025-03-07T12:10:00Z", "c1", "a1", email="Jo@Example.COM", name="Jo Doe"),  # re-sent
        click("e4", "2025-03-07T12:15:00Z", "add_to_cart", anon="a1", category="shoes"),  # anonymous id only
        click("e5", "2025-03-07T12:20:00Z", "checkout_start", customer="c1", anon="a1"),
        purchase("e6", "2025-03-07T12:21:00Z", "order", 79.9, [("shoes", 1, 79.9)]),
        email("e7", "2025-03-08T08:00:00Z", "delivered"),
        email("e8", "2025-03-08T09:00:00Z", "opened"),
        click("e0", "2025-03-01T09:00:00Z", anon="a1", session="s0"),  # late: arrives last, happened first
    ]
    views = build(events)
    assert list(views) == ["c1"]  # the anonymous activity is merged, no anon:a1 profile remains
    seven_days = {**ZERO_WINDOW, "clicks": 4, "product_views": 1, "add_to_carts": 1, "orders": 1, "spend": 79.9}
    seven_days["email_opens"] = 1
    expected = {
        "profile_id": "c1",
        "customer_id": "c1",
        "anonymous_ids": ["a1"],
        "emails": ["jo@example.com"],
        "merged_from": [{"anonymous_id": "a1", "at": "2025-03-07T12:10:00.000Z", "event_id": "e3"}],
        "identity_conflicts": [],
        "links_refused": {"anonymous_ids": 0, "emails": 0},
        "traits": {
            "email": {"value": "Jo@Example.COM", "updated_at": "2025-03-07T12:10:00.000Z"},
            "name": {"value": "Jo Doe", "updated_at": "2025-03-07T12:10:00.000Z"},
        },
        "behaviour": {
            "clicks": {
                "page_view": 2,
                "product_view": 1,
                "add_to_cart": 1,
                "remove_from_cart": 0,
                "search": 0,
                "checkout_start": 1,
            },
            "sessions": 2,
            "first_seen": "2025-03-01T09:00:00.000Z",  # the late click
            "last_seen": "2025-03-08T09:00:00.000Z",  # the open; a delivery is not customer-initiated
        },
        "transactions": {
            "orders": 1,
            "refunds": 0,
            "gross_spend": 79.9,
            "refunded": 0.0,
            "spend": 79.9,
            "aov": 79.9,
            "first_purchase_at": "2025-03-07T12:21:00.000Z",
            "last_purchase_at": "2025-03-07T12:21:00.000Z",
            "items": 1,
            "spend_by_category": {"shoes": 79.9},
        },
        # 3 days − 21 min before as_of → 2 whole days; the only buyer: nobody is worse → 1 + 0 = 1
        "rfm": {"recency_days": 2, "frequency": 1, "monetary": 79.9, "r_score": 1, "f_score": 1, "m_score": 1},
        "email": {
            "actions": {
                "sent": 0,
                "delivered": 1,
                "opened": 1,
                "clicked": 0,
                "bounced": 0,
                "unsubscribed": 0,
                "complained": 0,
            },
            "open_rate": 1.0,
            "click_through_rate": 0.0,
            "last_open_at": "2025-03-08T09:00:00.000Z",
        },
        "social": {"mentions": 0, "sentiment_mean": None, "sentiment_last": None, "negative_mentions": 0},
        "affinity": {
            "shoes": 1 * decay(3 * DAY_MS - 5 * MINUTE - 250)
            + 3 * decay(3 * DAY_MS - 15 * MINUTE)
            + 5 * decay(3 * DAY_MS - 21 * MINUTE)
        },
        "journey_stage": "retention",
        "windows": {
            "1h": ZERO_WINDOW,
            "24h": ZERO_WINDOW,
            "7d": seven_days,  # e1 is exactly 3 days old; everything but e0 is within the week
            "30d": {**seven_days, "clicks": 5},
            "90d": {**seven_days, "clicks": 5},
        },
        "meta": {
            "events_applied": 9,
            "last_event_at": "2025-03-08T09:00:00.000Z",
            "updated_at": None,
            "watermark": None,
            "schema_version": 1,
            "as_of": "2025-03-10T12:00:00.000Z",
        },
    }
    assert diff_profiles({"c1": expected}, views) == []
    assert views["c1"] == expected  # exact, including the JSON types


# ------------------------------------------------------------------------------------------------ windows


WINDOW_AGES = [90 * DAY_MS, 90 * DAY_MS - 1, 7 * DAY_MS, DAY_MS, DAY_MS - 1, 23 * HOUR_MS + 15 * MINUTE]
WINDOW_AGES += [HOUR_MS, HOUR_MS - 1, 0]


def _clicks_per_window(view: dict[str, Any]) -> dict[str, int]:
    return {label: w["clicks"] for label, w in view["windows"].items()}


def test_windows_at_a_whole_hour_are_exact_half_open_intervals() -> None:
    events = [click(f"e{i}", ago(age), customer="c1") for i, age in enumerate(WINDOW_AGES)]
    # 1h: ages < 1h → 1h−1ms, 0. 24h: + 1h, 23h15m, 24h−1ms. 7d: + 24h. 30d: + 7d. 90d: + 90d−1ms; 90d is out.
    assert _clicks_per_window(build(events)["c1"]) == {"1h": 2, "24h": 5, "7d": 6, "30d": 7, "90d": 8}


def test_windows_off_the_hour_round_the_old_edge_up_to_the_hour() -> None:
    events = [click(f"e{i}", ago(age), customer="c1") for i, age in enumerate(WINDOW_AGES)]
    events.append(click("late-in-hour", ago(-10 * MINUTE), customer="c1"))
    as_of = AS_OF + 30 * MINUTE  # ceil(as_of) = AS_OF + 1h
    # 1h covers (AS_OF, as_of]: only +10min. 24h covers (AS_OF − 23h, as_of]: +10min, 0, 1h−1ms, 1h
    # (23h15m is 23h45m before as_of, inside an exact 24 h, but its bucket is dropped). 7d: + 24h, 24h−1ms,
    # 23h15m. 30d: + 7d. 90d covers (AS_OF − 2159h, as_of]: 90d−1ms falls in the rounded-off hour.
    assert _clicks_per_window(build(events, as_of)["c1"]) == {"1h": 1, "24h": 4, "7d": 7, "30d": 8, "90d": 8}


# ------------------------------------------------------------------------------------------------ money


def test_refunds_currencies_and_exact_half_away_rounding() -> None:
    events = [
        purchase("o1", ago(10 * DAY_MS), "order", 94.85, [("shoes", 1, 79.9), ("socks", 2, 9.95)]),
        purchase("r1", ago(2 * HOUR_MS), "refund", 19.9, [("socks", 2, 9.95)]),
        purchase("o2", ago(3 * DAY_MS), "order", 50.0, [("shoes", 1, 50.0)], currency="USD"),  # 46.00 EUR
        # 0.50 GBP × 1.17 = 0.585 EUR → 58.5 cents → 59 (half away; float round() would give 58)
        purchase("o3", ago(HOUR_MS - 1), "order", 0.5, [("toys", 1, 0.5)], currency="GBP"),
        # 1.005 EUR → 100.5 cents → 101 (the float product 1.005 × 100 is 100.49999999999999)
        purchase("o4", ago(40 * DAY_MS), "order", 1.005, [("misc", 1, 1.005)]),
    ]
    view = build(events)["c1"]
    assert view["transactions"] == {
        "orders": 4,
        "refunds": 1,
        "gross_spend": 142.45,  # 94.85 + 46.00 + 0.59 + 1.01
        "refunded": 19.9,
        "spend": 122.55,
        "aov": 35.61,  # 14245 cents / 4 = 3561.25 → 3561
        "first_purchase_at": ago(40 * DAY_MS),
        "last_purchase_at": ago(HOUR_MS - 1),
        "items": 6,  # refund lines are not subtracted
        "spend_by_category": {"misc": 1.01, "shoes": 125.9, "socks": 0.0, "toys": 0.59},
    }
    spend = {label: w["spend"] for label, w in view["windows"].items()}
    assert spend == {"1h": 0.59, "24h": -19.31, "7d": 26.69, "30d": 121.54, "90d": 122.55}
    orders = {label: w["orders"] for label, w in view["windows"].items()}
    assert orders == {"1h": 1, "24h": 1, "7d": 2, "30d": 3, "90d": 4}
    # affinity: ordered lines only, 5 × quantity, decayed; the refund takes nothing away
    assert view["affinity"] == pytest.approx(
        {
            "shoes": 5 * decay(10 * DAY_MS) + 5 * decay(3 * DAY_MS),
            "socks": 10 * decay(10 * DAY_MS),
            "toys": 5 * decay(HOUR_MS - 1),
            "misc": 5 * decay(40 * DAY_MS),
        },
        rel=1e-12,
    )
    # 40 days without a click, but orders are customer-initiated: last_seen is the GBP order
    assert view["behaviour"]["first_seen"] == ago(40 * DAY_MS)
    assert view["behaviour"]["last_seen"] == ago(HOUR_MS - 1)


def test_aov_rounds_half_away_from_zero() -> None:
    events = [purchase("o1", ago(DAY_MS), "order", 0.01), purchase("o2", ago(DAY_MS), "order", 0.02)]
    assert build(events)["c1"]["transactions"]["aov"] == 0.02  # 3 cents / 2 = 1.5 → 2


# ------------------------------------------------------------------------------------------------ identity


def test_identity_first_claim_wins_and_later_claims_are_conflicts() -> None:
    events = [
        click("x1", ago(5 * DAY_MS), anon="a1"),  # before any link; a1 ends up with c3
        identify("i1", ago(4 * DAY_MS), "c3", "a1", email="c3@example.com"),  # first claim of a1
        # c4 claims a1 with an *earlier* event time, but arrives later: a conflict, recorded on c4
        identify("i2", ago(6 * DAY_MS), "c4", "a1", email="C4@Example.com", name="Four"),
        identify("i3", ago(3 * DAY_MS), "c3", "a1"),  # the same link again: changes nothing
        identify("i5", ago(DAY_MS), "c4", "a1"),  # c4 claims a1 again: the same conflict, one more attempt
        identify("i4", ago(2 * DAY_MS), "c3", "a2"),
        click("x2", ago(DAY_MS), anon="a1"),  # after the link, anonymous id only
        click("x3", ago(DAY_MS), anon="a9", session="s9"),  # never identified
        click("x4", ago(5 * DAY_MS + 1), anon="a2", session="s2"),  # a2 is linked by i4 (after it in time)
    ]
    views = build(events)
    assert sorted(views) == ["anon:a9", "c3", "c4"]
    c3, c4, anon = views["c3"], views["c4"], views["anon:a9"]
    assert c3["anonymous_ids"] == ["a1", "a2"]
    assert c3["merged_from"] == [
        {"anonymous_id": "a1", "at": ago(4 * DAY_MS), "event_id": "i1"},
        {"anonymous_id": "a2", "at": ago(2 * DAY_MS), "event_id": "i4"},
    ]
    assert c3["identity_conflicts"] == []
    assert c3["emails"] == ["c3@example.com"]
    assert c3["behaviour"]["clicks"]["page_view"] == 3  # x1, x2, x4
    assert c3["behaviour"]["sessions"] == 2  # s1, s2
    assert c3["behaviour"]["first_seen"] == ago(5 * DAY_MS + 1)
    assert c3["meta"]["events_applied"] == 6  # x1, i1, i3, i4, x2, x4

    assert c4["anonymous_ids"] == []
    assert c4["merged_from"] == []
    assert c4["identity_conflicts"] == [
        {"anonymous_id": "a1", "claimed_by": "c3", "at": ago(6 * DAY_MS), "event_id": "i2", "attempts": 2}
    ]
    assert c4["emails"] == ["c4@example.com"]  # the identify still sets the claimant's email and traits
    assert c4["traits"]["name"] == {"value": "Four", "updated_at": ago(6 * DAY_MS)}
    assert c4["meta"]["events_applied"] == 2
    assert c4["journey_stage"] == "awareness"

    assert anon["customer_id"] is None
    assert anon["anonymous_ids"] == ["a9"]
    assert (anon["emails"], anon["merged_from"], anon["identity_conflicts"], anon["traits"]) == ([], [], [], {})
    assert anon["rfm"] is None


def test_traits_keep_the_latest_event_time_then_the_greater_event_id() -> None:
    events = [
        identify("id-1", ago(10 * HOUR_MS), "c1", name="A", city="X"),
        identify("id-2", ago(5 * HOUR_MS), "c1", name="B"),  # no city: city stays X
        identify("id-4", ago(5 * HOUR_MS), "c1", name="D"),  # same time as id-2, greater id: wins
        identify("id-3", ago(5 * HOUR_MS), "c1", name="C"),  # same time, smaller id than id-4
        identify("id-0", ago(20 * HOUR_MS), "c1", name="Z", city="Y", email="z@x.org"),  # late and old
        identify("id-5", ago(HOUR_MS), "c1", name=None),  # null = omitted
    ]
    traits = build(events)["c1"]["traits"]
    assert traits == {
        "name": {"value": "D", "updated_at": ago(5 * HOUR_MS)},
        "city": {"value": "X", "updated_at": ago(10 * HOUR_MS)},
        "email": {"value": "z@x.org", "updated_at": ago(20 * HOUR_MS)},
    }


def test_a_duplicate_is_applied_once_and_the_first_copy_wins() -> None:
    events = [
        purchase("o1", ago(DAY_MS), "order", 10.0),
        purchase("o1", ago(DAY_MS), "order", 99.0),  # same id: ignored even though it differs
        click("k1", ago(HOUR_MS), customer="c1"),
        click("k1", ago(HOUR_MS), customer="c1"),
    ]
    view = build(events)["c1"]
    assert view["transactions"]["gross_spend"] == 10.0
    assert view["transactions"]["orders"] == 1
    assert view["behaviour"]["clicks"]["page_view"] == 1
    assert view["meta"]["events_applied"] == 2


# ------------------------------------------------------------------------------------------------ journey


def test_journey_stages_and_their_edges() -> None:
    events = [
        purchase("l1", ago(61 * DAY_MS), "order", 5.0, customer="lapsed"),  # lapsed beats retention
        click("n1", ago(60 * DAY_MS), customer="exactly60"),  # exactly 60 days: not "more than"
        purchase("r1", ago(61 * DAY_MS), "order", 5.0, customer="retained"),
        click("r2", ago(59 * DAY_MS), customer="retained"),
        click("d1", ago(7 * DAY_MS - 1), "add_to_cart", customer="decision"),
        click("d2", ago(6 * DAY_MS), "checkout_start", customer="checkout"),
        click("d3", ago(7 * DAY_MS), "add_to_cart", customer="cart8"),  # exactly 7 days: out
        email("c1", ago(30 * DAY_MS - 1), "clicked", customer="mailclick"),
        click("c2", ago(30 * DAY_MS), "search", customer="search30"),  # exactly 30 days: out
        click("c3", ago(29 * DAY_MS), "product_view", customer="viewer", category="books"),
        email("a1", ago(90 * DAY_MS), "delivered", customer="mailonly"),  # never seen: not lapsed
    ]
    stages = {pid: v["journey_stage"] for pid, v in build(events).items()}
    assert stages == {
        "lapsed": "lapsed",
        "exactly60": "awareness",
        "retained": "retention",
        "decision": "decision",
        "checkout": "decision",
        "cart8": "awareness",
        "mailclick": "consideration",
        "search30": "awareness",
        "viewer": "consideration",
        "mailonly": "awareness",
    }


# ------------------------------------------------------------------------------------------------ RFM


def test_rfm_scores_rank_buyers_with_ties() -> None:
    events = [
        purchase("a1", ago(10 * DAY_MS - HOUR_MS), "order", 10.0, customer="A"),
        purchase("b1", ago(6 * DAY_MS), "order", 5.0, customer="B"),
        purchase("b2", ago(5 * DAY_MS), "order", 5.0, customer="B"),
        purchase("c1", ago(6 * DAY_MS), "order", 20.0, customer="C"),
        purchase("c2", ago(5 * DAY_MS), "order", 20.0, customer="C"),
        purchase("c3", ago(DAY_MS), "refund", 10.0, customer="C"),
        purchase("d1", ago(3 * DAY_MS), "order", 1.0, customer="D"),
        purchase("d2", ago(2 * DAY_MS), "order", 2.0, customer="D"),
        purchase("d3", ago(DAY_MS), "order", 2.0, customer="D"),
        purchase("e1", ago(DAY_MS), "refund", 3.0, customer="E"),  # no order: no RFM, not a buyer
    ]
    rfm = {pid: v["rfm"] for pid, v in build(events).items()}
    # n = 4 buyers; score = 1 + floor(5 b / 4) with b the number of strictly worse buyers.
    # R (last purchase): A oldest b=0 → 1; B, C tie b=1 → 2; D b=3 → 4.
    # F (orders 1, 2, 2, 3): A 1; B, C 2; D 4.  M (net 10, 10, 30, 5): D b=0 → 1; A, B b=1 → 2; C b=3 → 4.
    assert rfm == {
        "A": {"recency_days": 9, "frequency": 1, "monetary": 10.0, "r_score": 1, "f_score": 1, "m_score": 2},
        "B": {"recency_days": 5, "frequency": 2, "monetary": 10.0, "r_score": 2, "f_score": 2, "m_score": 2},
        "C": {"recency_days": 5, "frequency": 2, "monetary": 30.0, "r_score": 2, "f_score": 2, "m_score": 4},
        "D": {"recency_days": 1, "frequency": 3, "monetary": 5.0, "r_score": 4, "f_score": 4, "m_score": 1},
        "E": None,
    }


def test_rfm_best_of_five_scores_five() -> None:
    events = [purchase(f"o{i}", ago((i + 1) * DAY_MS), "order", float(i + 1), customer=f"p{i}") for i in range(5)]
    rfm = {pid: v["rfm"] for pid, v in build(events).items()}
    assert [rfm[f"p{i}"]["r_score"] for i in range(5)] == [5, 4, 3, 2, 1]
    assert [rfm[f"p{i}"]["m_score"] for i in range(5)] == [1, 2, 3, 4, 5]
    assert [rfm[f"p{i}"]["f_score"] for i in range(5)] == [1, 1, 1, 1, 1]


# ------------------------------------------------------------------------------------------------ email, social


POSITIVE = "Loving my new shoes from Rapport Shop!"
NEGATIVE = "Terrible service, never again"
NEUTRAL = "The package arrived."


def test_vader_scores_used_below() -> None:
    assert (compound(POSITIVE), compound(NEGATIVE), compound(NEUTRAL)) == (0.636, -0.4767, 0.0)


def test_email_rates_round_half_away_from_zero() -> None:
    events = [email(f"d{i}", ago(DAY_MS), "delivered") for i in range(32)]
    events += [email("sent", ago(DAY_MS), "sent"), email("o1", ago(HOUR_MS), "opened")]
    events += [email("k1", ago(HOUR_MS), "clicked"), email("k2", ago(2 * HOUR_MS), "clicked")]
    view = build(events)["c1"]
    assert view["email"]["open_rate"] == 0.0313  # 1/32 = 0.03125 → 0.0313
    assert view["email"]["click_through_rate"] == 0.0625  # 2/32
    assert view["email"]["last_open_at"] == ago(HOUR_MS)
    assert view["email"]["actions"]["delivered"] == 32
    assert view["windows"]["1h"]["email_opens"] == 0  # exactly 1 h old
    assert view["windows"]["24h"]["email_opens"] == 1
    assert view["windows"]["24h"]["email_clicks"] == 2
    assert view["journey_stage"] == "consideration"  # an email click in the last 30 days


def test_social_sentiment() -> None:
    events = [
        mention("m-1", ago(3 * HOUR_MS), POSITIVE),
        mention("m-3", ago(2 * HOUR_MS), NEUTRAL),  # same time as m-2, greater id: the last one
        mention("m-2", ago(2 * HOUR_MS), NEGATIVE),
    ]
    social = build(events)["c1"]["social"]
    # (0.636 − 0.4767 + 0) / 3 = 0.0531
    assert social == {"mentions": 3, "sentiment_mean": 0.0531, "sentiment_last": 0.0, "negative_mentions": 1}
    two = build(events[::2])["c1"]["social"]  # (0.636 − 0.4767) / 2 = 0.07965 → 0.0797 (half away)
    assert two["sentiment_mean"] == 0.0797
    assert two["sentiment_last"] == -0.4767


# ------------------------------------------------------------------------------------------------ compare


def test_diff_profiles_reports_every_difference_by_path() -> None:
    view = build([click("e1", ago(HOUR_MS), customer="c1"), identify("i1", ago(HOUR_MS), "c1", "a1", name="N")])
    expected = {"c1": view["c1"], "c2": view["c1"]}
    actual = {"c1": _deep_copy(view["c1"]), "c9": view["c1"]}
    same = _deep_copy(view["c1"])
    same["meta"]["updated_at"] = "2025-03-10T12:00:01.000Z"  # processing-time fields are skipped
    same["meta"]["watermark"] = {"events.clicks": {"0": 17}}
    same["affinity"] = {}
    same["behaviour"]["sessions"] = 1.0  # a JSON number: 1 and 1.0 are the same value
    assert diff_profiles({"c1": view["c1"]}, {"c1": same}) == []

    actual["c1"]["traits"]["name"]["updated_at"] = ago(2 * HOUR_MS)  # not a meta field: compared
    actual["c1"]["windows"]["24h"]["spend"] = 1e-12  # within abs_tol of 0.0
    actual["c1"]["windows"]["7d"]["spend"] = 0.01
    actual["c1"]["anonymous_ids"] = ["a1", "a0"]
    actual["c1"]["merged_from"][0]["event_id"] = "other"
    actual["c1"]["rfm"] = {"r_score": 1}
    actual["c1"]["journey_stage"] = True
    del actual["c1"]["email"]["last_open_at"]
    actual["c1"]["extra"] = 1
    a1 = ago(HOUR_MS)
    assert diff_profiles(expected, actual) == [
        "c2: missing profile (expected, not in actual)",
        "c9: unexpected profile (in actual, not expected)",
        "c1: anonymous_ids expected ['a1'] got ['a1', 'a0'] (length 1 vs 2)",
        "c1: email.last_open_at missing (expected None)",
        "c1: extra unexpected (got 1)",
        "c1: journey_stage expected 'awareness' got True",
        "c1: merged_from[0].event_id expected 'i1' got 'other'",
        "c1: rfm expected None got {'r_score': 1}",
        f"c1: traits.name.updated_at expected {a1!r} got {ago(2 * HOUR_MS)!r}",
        "c1: windows.7d.spend expected 0.0 got 0.01",
    ]


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def test_affinity_decay_matches_the_half_life() -> None:
    events = [click("v1", ago(14 * DAY_MS), "product_view", customer="c1", category="books")]
    events += [click("v2", ago(0), "add_to_cart", customer="c1", category="books")]
    events += [click("v3", ago(0), "page_view", customer="c1", category="toys")]  # not a signal
    assert build(events)["c1"]["affinity"] == {"books": 3.5}
    assert math.isclose(decay(14 * DAY_MS), 0.5)
