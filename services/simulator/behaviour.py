"""One person's day: the latent drivers, the decisions they govern, and the state they leave behind.

Each day starts from the person's state (arrived, alive, engagement, days since last order, recent abandoned
cart, identified devices, email suppression). That state fixes the day's drivers:

* organic sessions ~ Poisson(L) with ``L = activity * engagement * weekday factor``;
* every session (organic or started from an email click) ends in an order with probability
  ``q = min(0.9, purchase_propensity * recency * cart)``, 0 for people who never identify, where
  ``recency = 1 - 0.6 exp(-(days since last order - 1) / 10)`` and ``cart = 1.6`` within 3 days of an
  abandoned cart;
* on a campaign day a mailable person (identified before today, consenting, not suppressed) gets one
  email: delivered with 0.99, opened with ``p_open_today = min(0.95, p_open * sqrt(engagement))``, clicked
  with ``p_click``, and the click starts a session with 0.8;
* social mentions ~ Poisson(mention_rate) once identified (before today).

So, exactly, ``P(no order) = exp(-L q) (1 - c q)`` where ``c`` is the probability of an email-driven
session, and ``E[orders] = (L + c) q``. At the end of the day the person goes silent for ever with
probability ``hazard = min(0.5, churn_hazard * engagement^-1.5)``, then log-engagement takes an AR(1) step.

Decisions are drawn the same way whether or not the day is rendered into events (see
:mod:`services.simulator.render`, which draws only cosmetic details), so the truth-only days beyond the
emitted period follow the same law.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from services.simulator import catalogue as cat
from services.simulator import render
from services.simulator.clock import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from services.simulator.customer import Customer
from services.simulator.population import (
    DISCOUNT_PCTS,
    ITEMS_CUM,
    P_FULL_REFUND,
    PARTIAL_REFUND_RANGE,
    QUANTITY_CUM,
)
from services.simulator.sampling import pick, poisson
from services.simulator.world import Campaign, Sink, World

P_BOUNCE: Final = 0.01
P_SUPPRESS_ON_BOUNCE: Final = 0.5  # a hard bounce
P_UNSUBSCRIBE: Final = 0.006  # given an open
P_COMPLAINT: Final = 0.001  # given an open and no unsubscribe
P_SESSION_AFTER_CLICK: Final = 0.8
P_SIGNUP: Final = 0.1  # per non-buying session of a not-yet-identified person who will identify
P_LOGIN: Final = 0.3  # per non-buying session on a second device not yet identified
P_SECOND_DEVICE_SESSION: Final = 0.35
P_CART: Final = 0.3  # a non-buying session adds to cart ...
P_ABANDON_CHECKOUT: Final = 0.3  # ... and even starts checkout
CART_BOOST: Final = 1.6
CART_MEMORY_DAYS: Final = 3
RECENCY_DIP: Final = 0.6
RECENCY_DAYS: Final = 10.0
MAX_Q: Final = 0.9
ENGAGEMENT_RHO: Final = 0.97
ENGAGEMENT_SIGMA: Final = 0.08
ENGAGEMENT_CLAMP: Final = 2.0
CHURN_ENGAGEMENT_EXPONENT: Final = 1.5
MAX_HAZARD: Final = 0.5
REFUND_DELAY_MS: Final = (DAY_MS, 14 * DAY_MS)


class Basket(NamedTuple):
    items: list[dict[str, Any]]
    discount: float | None
    total: float


class Refund(NamedTuple):
    amount: float
    delay_ms: int  # after the order
    full: bool


@dataclass(slots=True)
class SessionPlan:
    """The decisions of one session; rendering adds pages, products and times."""

    session_id: str
    device: int
    known: bool  # the device was identified when the session started
    campaign: Campaign | None
    identify_traits: dict[str, Any] | None  # the session identifies its device, carrying these traits
    at_checkout: bool  # ... at checkout (else at a random point: a sign-up or login)
    cart: bool  # a non-buying session that leaves items in the cart
    abandon_checkout: bool
    basket: Basket | None
    order_id: str | None
    refund: Refund | None


@dataclass(slots=True)
class EmailPlan:
    campaign: Campaign
    bounced: bool
    opened: bool
    clicked: bool
    session: SessionPlan | None
    unsubscribed: bool
    complained: bool


class Drivers(NamedTuple):
    lam: float  # organic sessions
    q: float  # P(order | session)
    mailed: bool  # gets today's campaign email
    p_open: float  # P(open | delivered) today
    c_session: float  # P(an email-driven session today)
    lam_mentions: float


def start_of_day(c: Customer, day: int, world: World) -> Drivers:
    """The day's drivers from the state at the start of the day (arrived, alive); records the truth."""
    person = c.person
    m = math.exp(c.log_engagement)
    lam = person.activity * m * world.weekday_factors[day]
    if person.customer_id is None:
        q = 0.0
    else:
        q = person.purchase_propensity
        if c.last_order_day is not None:
            q *= 1.0 - RECENCY_DIP * math.exp(-(day - c.last_order_day - 1) / RECENCY_DAYS)
        if c.last_abandon_day is not None and day - c.last_abandon_day <= CART_MEMORY_DAYS:
            q *= CART_BOOST
        q = min(MAX_Q, q)
    p_open = min(0.95, person.p_open * math.sqrt(m))
    mailed = is_mailable(c, day, world)
    p_open_delivered = (1 - P_BOUNCE) * p_open if mailed else 0.0
    c_session = p_open_delivered * person.p_click * P_SESSION_AFTER_CLICK
    lam_mentions = person.mention_rate if c.identified_day is not None and c.identified_day < day else 0.0

    truth = c.truth
    expected_orders = (lam + c_session) * q
    truth.p_order[day] = 1.0 - math.exp(-lam * q) * (1.0 - c_session * q)
    truth.expected_orders[day] = expected_orders
    truth.expected_spend[day] = expected_orders * person.expected_net_order_value
    truth.p_active[day] = 1.0 - math.exp(-lam - lam_mentions) * (1.0 - p_open_delivered)
    truth.p_open[day] = p_open
    truth.engagement[day] = m
    return Drivers(lam, q, mailed, p_open, c_session, lam_mentions)


def is_mailable(c: Customer, day: int, world: World) -> bool:
    return (
        day in world.campaigns
        and c.person.email_marketing
        and not c.email_suppressed
        and c.identified_day is not None
        and c.identified_day < day
    )


def end_of_day(c: Customer, day: int) -> None:
    """Churn draw (hazard from the day's engagement), then the engagement random walk."""
    rng = c.rng
    hazard = min(MAX_HAZARD, c.person.churn_hazard * math.exp(-CHURN_ENGAGEMENT_EXPONENT * c.log_engagement))
    c.truth.hazard[day] = hazard
    if rng.random() < hazard:
        c.alive = False
        c.truth.churn_day = day + 1
    x = ENGAGEMENT_RHO * c.log_engagement + ENGAGEMENT_SIGMA * rng.gauss(0.0, 1.0)
    c.log_engagement = max(-ENGAGEMENT_CLAMP, min(ENGAGEMENT_CLAMP, x))


def simulate_day(c: Customer, day: int, world: World, sink: Sink | None) -> None:
    """Advance one person by one day, rendering events into ``sink`` unless it is None (truth-only day)."""
    if day < c.person.arrival_day:
        return
    if not c.alive:
        # the shop keeps mailing churned customers; they never open
        if sink is not None and is_mailable(c, day, world):
            render.email(c, plan_email(c, day, world, None, 0.0), day, world, sink)
        return
    d = start_of_day(c, day, world)
    rng = c.rng
    n_sessions = poisson(rng, d.lam)
    if sink is None:
        for _ in range(n_sessions):
            _account_refund(c, day, world, plan_session(c, day, rng.random() < d.q, None))
        if d.mailed:
            email = plan_email(c, day, world, d, d.q)
            if email.session is not None:
                _account_refund(c, day, world, email.session)
        poisson(rng, d.lam_mentions)
    else:
        _render_sessions(c, day, world, sink, n_sessions=n_sessions, q=d.q)
        if d.mailed:
            render.email(c, plan_email(c, day, world, d, d.q), day, world, sink)
        for _ in range(poisson(rng, d.lam_mentions)):
            render.mention(c, day, world, sink)
    end_of_day(c, day)


def _render_sessions(c: Customer, day: int, world: World, sink: Sink, *, n_sessions: int, q: float) -> None:
    """The day's organic sessions: start times from the hour profile, one after another, all inside the day."""
    if not n_sessions:
        return
    rng = c.rng
    day_start = world.day_start(day)
    limit = world.day_start(day + 1) - SECOND_MS
    profile = world.profile(c.person.zone)
    starts = sorted(day_start + profile.offset(rng.random(), rng.random()) for _ in range(n_sessions))
    plans = [plan_session(c, day, rng.random() < q, None) for _ in range(n_sessions)]
    layouts = [render.layout(c, plan) for plan in plans]
    pauses = [30 * SECOND_MS + rng.randrange(5 * MINUTE_MS) for _ in range(n_sessions)]
    times = render.schedule(starts, [lay.duration for lay in layouts], pauses, limit=limit)
    if times[0] < day_start:  # more than a day of browsing: squeeze every session to fit
        share = (limit - day_start) // n_sessions - SECOND_MS
        layouts = [render.squeeze(lay, share) for lay in layouts]
        times = render.schedule(starts, [lay.duration for lay in layouts], pauses, limit=limit)
    for plan, lay, t0 in zip(plans, layouts, times, strict=True):
        render.emit_session(c, plan, lay, world, sink, t0=t0)


def _account_refund(c: Customer, day: int, world: World, plan: SessionPlan) -> None:
    """Truth-only days: book a refund on its day (an order's time of day is not drawn, 18:00 is assumed)."""
    if plan.refund is not None:
        refund_day = day + (18 * HOUR_MS + plan.refund.delay_ms) // DAY_MS
        if refund_day < world.total_days:
            c.truth.refunded[refund_day] += plan.refund.amount


def identify(c: Customer, day: int, device: int) -> dict[str, Any]:
    """Mark ``device`` identified; returns the traits its identify call carries (all of them the first time)."""
    c.device_identified[device] = True
    if c.identified_day is None:
        c.identified_day = day
        c.primary_device = device
        c.truth.identified_day = day
        return c.person.identify_traits
    return {"email": c.person.email}


def draw_basket(c: Customer, rng: random.Random) -> Basket:
    """Order lines (same product merged), discount and total, in the person's currency."""
    person = c.person
    prices = cat.PRICES[person.currency]
    lines: dict[str, dict[str, Any]] = {}
    subtotal = 0.0
    for _ in range(1 + pick(ITEMS_CUM, rng.random())):
        k = pick(person.category_cum, rng.random())
        t = pick(person.tier_cum, rng.random())
        j = rng.randrange(cat.PRODUCTS_PER_TIER)
        qty = 1 + pick(QUANTITY_CUM, rng.random())
        price = prices[k][t][j]
        subtotal += qty * price
        pid = cat.PRODUCT_IDS[k][t][j]
        line = lines.get(pid)
        if line is None:
            lines[pid] = {"product_id": pid, "category": cat.CATEGORIES[k], "quantity": qty, "unit_price": price}
        else:
            line["quantity"] += qty
    discount = None
    if rng.random() < person.discount_rate:
        discount = round(subtotal * DISCOUNT_PCTS[rng.randrange(len(DISCOUNT_PCTS))], 2)
    return Basket(list(lines.values()), discount, round(subtotal - (discount or 0.0), 2))


def plan_session(c: Customer, day: int, converting: bool, campaign: Campaign | None) -> SessionPlan:
    """Draw a session's decisions and apply their effect on the state."""
    person = c.person
    rng = c.rng
    c.n_sessions += 1
    if campaign is not None:
        device = c.primary_device
    elif (
        person.second_device_day is not None
        and day >= person.second_device_day
        and rng.random() < P_SECOND_DEVICE_SESSION
    ):
        device = 1
    else:
        device = 0
    known = c.device_identified[device]
    signup = False
    if not converting and person.customer_id is not None and not known:
        signup = rng.random() < (P_LOGIN if c.identified_day is not None else P_SIGNUP)
    cart = not converting and rng.random() < P_CART
    abandon_checkout = cart and rng.random() < P_ABANDON_CHECKOUT
    traits = identify(c, day, device) if (converting and not known) or signup else None
    if cart:
        c.last_abandon_day = day
    basket: Basket | None = None
    order_id: str | None = None
    refund: Refund | None = None
    if converting:
        basket = draw_basket(c, rng)
        c.last_order_day = day
        c.n_orders += 1
        order_id = f"o-{person.index}-{c.n_orders}"
        c.truth.orders[day] += 1
        c.truth.gross[day] += basket.total
        if rng.random() < person.refund_rate:
            full = rng.random() < P_FULL_REFUND
            amount = basket.total if full else round(basket.total * rng.uniform(*PARTIAL_REFUND_RANGE), 2)
            refund = Refund(amount, rng.randrange(*REFUND_DELAY_MS), full)
    session_id = f"s-{person.index}-{c.n_sessions}"
    return SessionPlan(
        session_id, device, known, campaign, traits, converting, cart, abandon_checkout, basket, order_id, refund
    )


def plan_email(c: Customer, day: int, world: World, d: Drivers | None, q: float) -> EmailPlan:
    """Today's campaign email; ``d`` is None for a churned recipient, who never opens."""
    rng = c.rng
    campaign = world.campaigns[day]
    bounced = rng.random() < P_BOUNCE
    if bounced and rng.random() < P_SUPPRESS_ON_BOUNCE:
        c.email_suppressed = True
    opened = not bounced and d is not None and rng.random() < d.p_open
    clicked = opened and rng.random() < c.person.p_click
    session = None
    if clicked and rng.random() < P_SESSION_AFTER_CLICK:
        session = plan_session(c, day, rng.random() < q, campaign)
    unsubscribed = opened and rng.random() < P_UNSUBSCRIBE
    complained = opened and not unsubscribed and rng.random() < P_COMPLAINT
    if unsubscribed or complained:
        c.email_suppressed = True
    return EmailPlan(campaign, bounced, opened, clicked, session, unsubscribed, complained)
