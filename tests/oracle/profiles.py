"""The profile view, recomputed naively from the complete list of a profile's events.

Nothing here is incremental: the events are deduplicated, assigned to profiles, collected into one list
per profile, and every field of the view (``docs/profile.md``, "Shape") is a comprehension or a loop over
that whole list, evaluated at ``as_of``. Clarity over speed.

Readings of the documentation that the oracle commits to (each is a choice where the doc is silent or
ambiguous; the comparison with the real fold tells whether both made the same one):

- **Deduplication** is global and unbounded: the first occurrence of an ``event_id`` is kept, wherever it
  belongs. Sessions are counted over every click (no 7-day session memory).
- **Identity links** are decided in arrival order: the first identify that links an anonymous id wins; a
  later identify linking it to another customer is a conflict on the claiming profile, with ``claimed_by``
  = the customer that already holds the link. A repeat of the same link changes nothing (``merged_from``
  keeps the first linking identify). An event with a ``customer_id`` belongs to that customer; one
  without belongs to the customer its anonymous id is linked to (by any identify, before or after it), or
  else to ``anon:<anonymous_id>``. Only identifies link: a click carrying both ids does not.
- A customer holds at most ``max_anonymous_ids`` anonymous ids: an identify claiming a free one past
  that links nothing and counts in the customer's ``links_refused.anonymous_ids`` (so do its repeats).
  It names at most ``max_emails`` emails, in arrival order: an identify naming one more does not list it
  and counts in ``links_refused.emails``; its ``traits.email`` is still set.
- ``merged_from`` lists every anonymous id linked to the customer (whether or not it had activity of its
  own), sorted by (``at``, ``event_id``, ``anonymous_id``); ``identity_conflicts`` is sorted the same way,
  one entry per (anonymous id, holder): the earliest conflicting identify and how many there were; at
  most ``max_anonymous_ids`` entries, the earliest.
- **Traits**: only traits some identify set are listed (``{}`` when none); a JSON ``null`` counts as
  omitted; values are kept as sent (``traits.email`` is not lower-cased, ``emails`` is). Conflicting
  identifies still set the claiming customer's traits and emails.
- **Money**: ``cents = round_half_away_from_zero(Decimal(repr(amount)) × Decimal(repr(rate)) × 100)``,
  i.e. the decimal values the JSON numbers spell, multiplied exactly (so ``1.005`` EUR is 101 cents and
  0.50 GBP at 1.17 is 59 cents, where float arithmetic and ``round`` would give 100 and 58). Order lines:
  ``round_half_away(quantity × unit_price × rate × 100)`` per line. Amounts out: ``cents / 100``.
  ``aov`` = ``gross cents / orders`` rounded half away from zero to a whole cent. A currency missing from
  the rates is an error.
- **4-decimal figures** (``open_rate``, ``click_through_rate``, ``sentiment_mean``) are the exact ratio
  (VADER's compounds are exact 4-decimal numbers) rounded half away from zero, not Python's ``round`` of a
  float (``1/32`` gives 0.0313, ``round(0.03125, 4)`` gives 0.0312).
- **Ties** on timestamps (traits, ``sentiment_last``) are broken by the greater ``event_id`` as a Python
  string; timestamps are compared at millisecond precision (sub-millisecond digits are truncated).
- **Journey stage**: "in the 7d / 30d window" is the window's own interval (below: its old edge is rounded
  to the hour unless ``as_of`` is a whole hour), as docs/profile.md defines it; "more than 60 days
  before" is ``as_of − last_seen > 60 days``; a profile without any customer-initiated event
  (``last_seen`` null) is never lapsed.
- **Affinity** lists the categories of contributing events only (product views and add-to-carts with a
  category, ordered line items); ``spend_by_category`` lists every category of an order or refund line,
  even when its net is 0 or negative.
- **RFM** population: every profile built with at least one order, anonymous profiles included.
- ``as_of`` earlier than any event is an error.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import Any, Final

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
SCHEMA_VERSION: Final = 1

CLICK_ACTIONS: Final = ("page_view", "product_view", "add_to_cart", "remove_from_cart", "search", "checkout_start")
EMAIL_ACTIONS: Final = ("sent", "delivered", "opened", "clicked", "bounced", "unsubscribed", "complained")
TRAIT_NAMES: Final = ("email", "name", "birth_year", "gender", "country", "city", "income_band", "interests", "consent")
WINDOW_HOURS: Final = {"1h": 1, "24h": 24, "7d": 7 * 24, "30d": 30 * 24, "90d": 90 * 24}

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def _default_rates() -> dict[str, float]:
    return {"EUR": 1.0, "USD": 0.92, "GBP": 1.17}


@dataclass(frozen=True)
class OracleSettings:
    base_currency: str = "EUR"
    fx_rates: Mapping[str, float] = field(default_factory=_default_rates)  # base units per unit of currency
    affinity_half_life_days: float = 14
    lapsed_after_days: float = 60
    max_anonymous_ids: int = 1000
    max_emails: int = 100


# ---------------------------------------------------------------------------------------------- helpers


def parse_ms(text: str) -> int:
    """An RFC 3339 timestamp with offset → epoch milliseconds (sub-millisecond digits truncated)."""
    return (datetime.fromisoformat(text) - _EPOCH) // _ONE_MS


def format_ms(ms: int) -> str:
    """Epoch milliseconds → ``2025-03-14T18:02:11.520Z``."""
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def _half_away(value: Fraction) -> int:
    """The integer nearest to ``value``, halves rounded away from zero."""
    sign = -1 if value < 0 else 1
    return sign * math.floor(abs(value) + Fraction(1, 2))


def _cents(*factors: float | int) -> int:
    """Cents of the exact decimal product of the factors (as their reprs spell them) × 100, half away."""
    with localcontext(prec=200):  # wide enough that every product here is exact
        product = Decimal(100)
        for f in factors:
            product *= Decimal(repr(f))
        return int(product.quantize(Decimal(1), rounding=ROUND_HALF_UP))  # ROUND_HALF_UP: away from zero


def _major(cents: int) -> float:
    return cents / 100


def _round4(value: Fraction) -> float:
    return _half_away(value * 10_000) / 10_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class _Ev:
    """One applied event: its arrival position, event time in ms, and the event dict itself."""

    seq: int
    ts: int
    e: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.e["type"])

    @property
    def action(self) -> str | None:
        return self.e.get("action")

    @property
    def id(self) -> str:
        return str(self.e["event_id"])


@dataclass
class _Link:
    customer_id: str
    at: int
    event_id: str


_SENTIMENT_CACHE: dict[str, float] = {}
_ANALYZER: SentimentIntensityAnalyzer | None = None


def compound(text: str) -> float:
    """VADER's compound score (already rounded to 4 decimals by VADER)."""
    global _ANALYZER  # noqa: PLW0603 - one analyzer, built lazily (loading the lexicon takes a while)
    if text not in _SENTIMENT_CACHE:
        if _ANALYZER is None:
            _ANALYZER = SentimentIntensityAnalyzer()
        _SENTIMENT_CACHE[text] = float(_ANALYZER.polarity_scores(text)["compound"])
    return _SENTIMENT_CACHE[text]


# ---------------------------------------------------------------------------------------------- the build


def build_profiles(
    events: Iterable[dict[str, Any]], *, as_of_ms: int, settings: OracleSettings
) -> dict[str, dict[str, Any]]:
    """Every profile's view at ``as_of_ms``, from valid events (dicts) in arrival order."""
    # 1. Global deduplication: the first occurrence of an event_id wins.
    applied: list[_Ev] = []
    seen_ids: set[str] = set()
    for seq, e in enumerate(events):
        if e["event_id"] in seen_ids:
            continue
        seen_ids.add(e["event_id"])
        applied.append(_Ev(seq=seq, ts=parse_ms(e["timestamp"]), e=e))
    late = [ev.id for ev in applied if ev.ts > as_of_ms]
    if late:
        raise ValueError(f"as_of {format_ms(as_of_ms)} is before event(s) {late[:5]}")

    # 2. Identity links, in arrival order: first claim wins, later different claims are conflicts, a claim
    # of a free id by a customer holding the most it may is refused.
    links: dict[str, _Link] = {}
    conflicts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    refused: dict[str, int] = defaultdict(int)
    held: dict[str, int] = defaultdict(int)
    named: dict[str, set[str]] = defaultdict(set)
    email_refused: set[str] = set()  # ids of identifies whose email is not their customer's
    for ev in applied:
        if ev.type != "identify":
            continue
        customer = ev.e["customer_id"]
        email = (ev.e.get("traits") or {}).get("email")
        if email is not None:
            if email.lower() in named[customer] or len(named[customer]) < settings.max_emails:
                named[customer].add(email.lower())
            else:
                email_refused.add(ev.id)
        anon = ev.e.get("anonymous_id")
        if anon is None:
            continue
        if anon not in links:
            if held[customer] >= settings.max_anonymous_ids:
                refused[customer] += 1
                continue
            links[anon] = _Link(customer_id=customer, at=ev.ts, event_id=ev.id)
            held[customer] += 1
        elif links[anon].customer_id != customer:
            conflicts[customer].append(
                {"anonymous_id": anon, "claimed_by": links[anon].customer_id, "at": ev.ts, "event_id": ev.id}
            )

    # 3. Each event's profile.
    by_profile: dict[str, list[_Ev]] = defaultdict(list)
    anonymous_profiles: dict[str, str] = {}  # profile_id → its anonymous id
    for ev in applied:
        if ev.e.get("customer_id") is not None:
            pid = str(ev.e["customer_id"])
        elif ev.e["anonymous_id"] in links:
            pid = links[ev.e["anonymous_id"]].customer_id
        else:
            pid = f"anon:{ev.e['anonymous_id']}"
            anonymous_profiles[pid] = str(ev.e["anonymous_id"])
        by_profile[pid].append(ev)

    # 4. The views, then RFM against the population of buyers.
    views = {
        pid: _view(pid, anonymous_profiles.get(pid), evs, links, conflicts, refused, email_refused, as_of_ms, settings)
        for pid, evs in by_profile.items()
    }
    _score_rfm(views, by_profile, as_of_ms, settings)
    return views


def _rate(currency: str, settings: OracleSettings) -> float:
    if currency in settings.fx_rates:
        return settings.fx_rates[currency]
    if currency == settings.base_currency:
        return 1.0
    raise ValueError(f"no FX rate for {currency}")


def _total_cents(ev: _Ev, settings: OracleSettings) -> int:
    return _cents(ev.e["total"], _rate(ev.e["currency"], settings))


def _line_cents(ev: _Ev, item: dict[str, Any], settings: OracleSettings) -> int:
    return _cents(item["quantity"], item["unit_price"], _rate(ev.e["currency"], settings))


def _latest(evs: list[_Ev]) -> _Ev | None:
    """The event with the latest timestamp, ties: the greater event_id."""
    return max(evs, key=lambda ev: (ev.ts, ev.id), default=None)


def _is_click(ev: _Ev, *actions: str) -> bool:
    return ev.type == "click" and (not actions or ev.action in actions)


def _is_email(ev: _Ev, *actions: str) -> bool:
    return ev.type == "email" and ev.action in actions


def _is_order(ev: _Ev) -> bool:
    return ev.type == "purchase" and ev.action == "order"


def _is_refund(ev: _Ev) -> bool:
    return ev.type == "purchase" and ev.action == "refund"


def _is_mention(ev: _Ev) -> bool:
    return ev.type == "social_mention"


def _is_customer_initiated(ev: _Ev) -> bool:
    return ev.type in ("click", "social_mention", "identify") or _is_email(ev, "opened", "clicked") or _is_order(ev)


def _fmt_opt(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)


def _view(
    pid: str,
    anonymous_id: str | None,
    evs: list[_Ev],
    links: dict[str, _Link],
    conflicts: dict[str, list[dict[str, Any]]],
    refused: dict[str, int],
    email_refused: set[str],
    as_of: int,
    settings: OracleSettings,
) -> dict[str, Any]:
    customer_id = None if anonymous_id is not None else pid

    # Identity
    if anonymous_id is not None:
        anonymous_ids = [anonymous_id]
        merged: list[tuple[str, _Link]] = []
    else:
        merged = [(anon, link) for anon, link in links.items() if link.customer_id == customer_id]
        anonymous_ids = sorted(anon for anon, _ in merged)
    merged.sort(key=lambda m: (m[1].at, m[1].event_id, m[0]))
    merged_from = [{"anonymous_id": a, "at": format_ms(lk.at), "event_id": lk.event_id} for a, lk in merged]
    claims_by_id: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in conflicts.get(customer_id, []) if customer_id else []:
        claims_by_id[c["anonymous_id"], c["claimed_by"]].append(c)
    own_conflicts = sorted(
        ({**min(cs, key=lambda c: (c["at"], c["event_id"])), "attempts": len(cs)} for cs in claims_by_id.values()),
        key=lambda c: (c["at"], c["event_id"], c["anonymous_id"]),
    )[: settings.max_anonymous_ids]
    identity_conflicts = [{**c, "at": format_ms(c["at"])} for c in own_conflicts]

    identifies = [ev for ev in evs if ev.type == "identify"]
    emails = sorted(
        {
            ev.e["traits"]["email"].lower()
            for ev in identifies
            if (ev.e.get("traits") or {}).get("email") is not None and ev.id not in email_refused
        }
    )

    # Traits
    traits: dict[str, dict[str, Any]] = {}
    for name in TRAIT_NAMES:
        setters = [ev for ev in identifies if (ev.e.get("traits") or {}).get(name) is not None]
        winner = _latest(setters)
        if winner is not None:
            traits[name] = {"value": winner.e["traits"][name], "updated_at": format_ms(winner.ts)}

    # Behaviour
    clicks = [ev for ev in evs if _is_click(ev)]
    initiated = [ev.ts for ev in evs if _is_customer_initiated(ev)]
    first_seen = min(initiated, default=None)
    last_seen = max(initiated, default=None)
    behaviour = {
        "clicks": {a: sum(1 for ev in clicks if ev.action == a) for a in CLICK_ACTIONS},
        "sessions": len({ev.e["session_id"] for ev in clicks}),
        "first_seen": _fmt_opt(first_seen),
        "last_seen": _fmt_opt(last_seen),
    }

    # Transactions
    orders = [ev for ev in evs if _is_order(ev)]
    refunds = [ev for ev in evs if _is_refund(ev)]
    gross = sum(_total_cents(ev, settings) for ev in orders)
    refunded = sum(_total_cents(ev, settings) for ev in refunds)
    by_category: dict[str, int] = {}
    for ev in orders + refunds:
        sign = 1 if _is_order(ev) else -1
        for item in ev.e.get("items") or []:
            cat = item["category"]
            by_category[cat] = by_category.get(cat, 0) + sign * _line_cents(ev, item, settings)
    transactions = {
        "orders": len(orders),
        "refunds": len(refunds),
        "gross_spend": _major(gross),
        "refunded": _major(refunded),
        "spend": _major(gross - refunded),
        "aov": _major(_half_away(Fraction(gross, len(orders)))) if orders else None,
        "first_purchase_at": _fmt_opt(min((ev.ts for ev in orders), default=None)),
        "last_purchase_at": _fmt_opt(max((ev.ts for ev in orders), default=None)),
        "items": sum(item["quantity"] for ev in orders for item in ev.e.get("items") or []),
        "spend_by_category": {cat: _major(c) for cat, c in sorted(by_category.items())},
    }

    # Email
    def n_email(action: str) -> int:
        return sum(1 for ev in evs if _is_email(ev, action))

    delivered = n_email("delivered")
    email = {
        "actions": {a: n_email(a) for a in EMAIL_ACTIONS},
        "open_rate": _round4(Fraction(n_email("opened"), delivered)) if delivered else None,
        "click_through_rate": _round4(Fraction(n_email("clicked"), delivered)) if delivered else None,
        "last_open_at": _fmt_opt(max((ev.ts for ev in evs if _is_email(ev, "opened")), default=None)),
    }

    # Social
    mentions = [ev for ev in evs if _is_mention(ev)]
    scores = [compound(ev.e["text"]) for ev in mentions]
    last_mention = _latest(mentions)
    social = {
        "mentions": len(mentions),
        "sentiment_mean": (
            _round4(sum((Fraction(repr(s)) for s in scores), Fraction(0)) / len(scores)) if scores else None
        ),
        "sentiment_last": compound(last_mention.e["text"]) if last_mention is not None else None,
        "negative_mentions": sum(1 for s in scores if s <= -0.05),
    }

    # Affinity
    half_life_ms = settings.affinity_half_life_days * DAY_MS
    contributions: dict[str, list[float]] = defaultdict(list)
    for ev in evs:
        decay = 2.0 ** (-(as_of - ev.ts) / half_life_ms)
        if _is_click(ev, "product_view") and ev.e.get("category") is not None:
            contributions[ev.e["category"]].append(1 * decay)
        elif _is_click(ev, "add_to_cart") and ev.e.get("category") is not None:
            contributions[ev.e["category"]].append(3 * decay)
        elif _is_order(ev):
            for item in ev.e.get("items") or []:
                contributions[item["category"]].append(5 * item["quantity"] * decay)
    affinity = {cat: math.fsum(parts) for cat, parts in sorted(contributions.items())}

    # Journey stage
    def within(days: int, pred: Callable[[_Ev], bool]) -> bool:
        top = _ceil_div(as_of, HOUR_MS)
        return any(pred(ev) and top - days * 24 < _ceil_div(ev.ts, HOUR_MS) <= top for ev in evs)

    if last_seen is not None and as_of - last_seen > settings.lapsed_after_days * DAY_MS:
        stage = "lapsed"
    elif orders:
        stage = "retention"
    elif within(7, lambda ev: _is_click(ev, "add_to_cart", "checkout_start")):
        stage = "decision"
    elif within(30, lambda ev: _is_click(ev, "product_view", "search") or _is_email(ev, "clicked")):
        stage = "consideration"
    else:
        stage = "awareness"

    # Windows: bucket b = ceil(ts / 1h); window W includes ceil(as_of / 1h) − W < b ≤ ceil(as_of / 1h).
    top = _ceil_div(as_of, HOUR_MS)
    windows: dict[str, dict[str, Any]] = {}
    for label, hours in WINDOW_HOURS.items():
        inside = [ev for ev in evs if top - hours < _ceil_div(ev.ts, HOUR_MS) <= top]
        net = sum(_total_cents(ev, settings) for ev in inside if _is_order(ev)) - sum(
            _total_cents(ev, settings) for ev in inside if _is_refund(ev)
        )
        windows[label] = {
            "clicks": sum(1 for ev in inside if _is_click(ev)),
            "product_views": sum(1 for ev in inside if _is_click(ev, "product_view")),
            "add_to_carts": sum(1 for ev in inside if _is_click(ev, "add_to_cart")),
            "orders": sum(1 for ev in inside if _is_order(ev)),
            "spend": _major(net),
            "email_opens": sum(1 for ev in inside if _is_email(ev, "opened")),
            "email_clicks": sum(1 for ev in inside if _is_email(ev, "clicked")),
            "mentions": sum(1 for ev in inside if _is_mention(ev)),
        }

    return {
        "profile_id": pid,
        "customer_id": customer_id,
        "anonymous_ids": anonymous_ids,
        "emails": emails,
        "merged_from": merged_from,
        "identity_conflicts": identity_conflicts,
        "links_refused": {
            "anonymous_ids": refused.get(customer_id, 0) if customer_id else 0,
            "emails": sum(1 for ev in identifies if ev.id in email_refused),
        },
        "traits": traits,
        "behaviour": behaviour,
        "transactions": transactions,
        "rfm": None,  # filled in by _score_rfm
        "email": email,
        "social": social,
        "affinity": affinity,
        "journey_stage": stage,
        "windows": windows,
        "meta": {
            "events_applied": len(evs),
            "last_event_at": format_ms(max(ev.ts for ev in evs)),
            "updated_at": None,
            "watermark": None,
            "schema_version": SCHEMA_VERSION,
            "as_of": format_ms(as_of),
        },
    }


def _score_rfm(
    views: dict[str, dict[str, Any]], by_profile: dict[str, list[_Ev]], as_of: int, settings: OracleSettings
) -> None:
    """``score = min(5, 1 + floor(5 × b / n))``, ``b`` = buyers with a strictly worse value, ``n`` = buyers."""
    facts: dict[str, tuple[int, int, int]] = {}  # pid → (last purchase ms, orders, net spend cents)
    for pid, evs in by_profile.items():
        orders = [ev for ev in evs if _is_order(ev)]
        if not orders:
            continue
        net = sum(_total_cents(ev, settings) for ev in orders) - sum(
            _total_cents(ev, settings) for ev in evs if _is_refund(ev)
        )
        facts[pid] = (max(ev.ts for ev in orders), len(orders), net)
    n = len(facts)
    columns = [sorted(f[i] for f in facts.values()) for i in range(3)]

    def score(dimension: int, value: int) -> int:
        worse = bisect_left(columns[dimension], value)  # how many buyers have a strictly smaller value
        return min(5, 1 + (5 * worse) // n)

    for pid, (last_ms, n_orders, net) in facts.items():
        views[pid]["rfm"] = {
            "recency_days": (as_of - last_ms) // DAY_MS,
            "frequency": n_orders,
            "monetary": _major(net),
            "r_score": score(0, last_ms),
            "f_score": score(1, n_orders),
            "m_score": score(2, net),
        }
