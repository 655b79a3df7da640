"""Turning decided sessions, emails and mentions into events with pages, products, texts and times.

Everything drawn here is cosmetic (it never changes the state or the truth quantities), except the exact
timestamps, which fix the day on which an emitted refund is booked in the realised ``refunded`` array.

Offsets differ by source on purpose: ``web`` events carry the visitor's local offset (``+01:00``,
``+00:00``, ``-05:00`` ...), ``shop`` and ``esp`` use ``Z``, and the social-listening vendor reports
``-08:00``. ``received_at`` (set by the sink) is always ``Z``.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from services.simulator import catalogue as cat
from services.simulator.clock import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, UTC_Z, format_ts, zone
from services.simulator.population import PLATFORMS
from services.simulator.sampling import lognormal_durations, pick
from services.simulator.texts import mention_text

if TYPE_CHECKING:
    from services.simulator.behaviour import Basket, EmailPlan, SessionPlan
    from services.simulator.customer import Customer
    from services.simulator.world import Campaign, Sink, World

SHOP_ZONE: Final = UTC_Z
ESP_ZONE: Final = UTC_Z
SOCIAL_ZONE: Final = zone(-480)

P_REMOVE: Final = 0.2
P_BROWSE_MORE: Final = 0.7  # geometric number of browsing steps after landing, at most 12
MAX_BROWSE: Final = 12

_TABLE_SIZE: Final = 1024
#: Time between two steps of a session: lognormal, median 21 s, 1 s to 10 min.
_STEP_GAPS: Final = lognormal_durations(21_000, 1.0, floor_ms=SECOND_MS, cap_ms=10 * MINUTE_MS, size=_TABLE_SIZE)

_PLATFORM_URLS: Final = {
    "twitter": "https://twitter.com/{h}/status/{n}",
    "instagram": "https://www.instagram.com/p/{h}{n}/",
    "reddit": "https://www.reddit.com/r/shopping/comments/{n}/",
    "tiktok": "https://www.tiktok.com/{h}/video/{n}",
}

# step kinds of a session
_CLICK: Final = 0
_IDENTIFY: Final = 1
_ORDER: Final = 2

Step = tuple[Any, ...]  # (_CLICK, action, url, extra fields) | (_IDENTIFY,) | (_ORDER,)


def _landing(c: Customer, rng: random.Random, campaign: Campaign | None) -> Step:
    """The first page view, with where the visit came from."""
    if campaign is not None:
        utm = {"utm_source": "email", "utm_medium": "email", "utm_campaign": campaign.campaign_id}
        return (_CLICK, "page_view", campaign.link_url, utm)
    u = rng.random()
    k = pick(c.person.category_cum, rng.random())
    if u < 0.45:  # direct
        url = cat.HOME_URL if rng.random() < 0.7 else cat.OTHER_PAGES[1 + rng.randrange(2)]
        return (_CLICK, "page_view", url, {})
    if u < 0.75:  # organic search
        return (_CLICK, "page_view", cat.CATEGORY_URLS[k], {"referrer": "https://www.google.com/"})
    if u < 0.87:  # social
        source = "instagram" if rng.random() < 0.6 else "tiktok"
        fields = {
            "referrer": f"https://www.{source}.com/",
            "utm_source": source,
            "utm_medium": "social",
            "utm_campaign": "brand_social",
        }
        return (_CLICK, "page_view", cat.CATEGORY_URLS[k], fields)
    terms = cat.SEARCH_TERMS[k]  # paid search
    j = rng.randrange(len(terms))
    fields = {
        "referrer": "https://www.google.com/",
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": f"search_{cat.CATEGORIES[k]}",
        "utm_term": terms[j],
    }
    return (_CLICK, "page_view", cat.SEARCH_URLS[k][j], fields)


def _browse(c: Customer, rng: random.Random) -> Step:
    u = rng.random()
    k = pick(c.person.category_cum, rng.random())
    if u < 0.55:
        t = pick(c.person.tier_cum, rng.random())
        j = rng.randrange(cat.PRODUCTS_PER_TIER)
        fields = {"product_id": cat.PRODUCT_IDS[k][t][j], "category": cat.CATEGORIES[k]}
        return (_CLICK, "product_view", cat.PRODUCT_URLS[k][t][j], fields)
    if u < 0.75:
        j = rng.randrange(len(cat.SEARCH_TERMS[k]))
        return (_CLICK, "search", cat.SEARCH_URLS[k][j], {"query": cat.SEARCH_TERMS[k][j]})
    if u < 0.93:
        return (_CLICK, "page_view", cat.CATEGORY_URLS[k], {"category": cat.CATEGORIES[k]})
    return (_CLICK, "page_view", cat.OTHER_PAGES[rng.randrange(len(cat.OTHER_PAGES))], {})


def _random_product(c: Customer, rng: random.Random) -> dict[str, Any]:
    k = pick(c.person.category_cum, rng.random())
    t = pick(c.person.tier_cum, rng.random())
    return {"product_id": cat.PRODUCT_IDS[k][t][rng.randrange(cat.PRODUCTS_PER_TIER)], "category": cat.CATEGORIES[k]}


def _to_cart(product: dict[str, Any]) -> list[Step]:
    url = f"{cat.SHOP_URL}/p/{product['product_id']}"
    fields = {"product_id": product["product_id"], "category": product["category"]}
    return [(_CLICK, "product_view", url, fields), (_CLICK, "add_to_cart", url, fields)]


def _steps(c: Customer, plan: SessionPlan, rng: random.Random) -> list[Step]:
    steps = [_landing(c, rng, plan.campaign)]
    while len(steps) <= MAX_BROWSE and rng.random() < P_BROWSE_MORE:
        steps.append(_browse(c, rng))
    if plan.identify_traits is not None and not plan.at_checkout:
        steps.insert(1 + rng.randrange(len(steps)), (_IDENTIFY,))
    if plan.basket is not None:
        for line in plan.basket.items:
            steps.extend(_to_cart(line))
        if rng.random() < P_REMOVE:
            extra = _random_product(c, rng)
            steps.extend(_to_cart(extra))
            steps.append((_CLICK, "remove_from_cart", cat.CART_URL, extra))
        steps.append((_CLICK, "page_view", cat.CART_URL, {}))
        if plan.identify_traits is not None:
            steps.append((_IDENTIFY,))
        steps.append((_CLICK, "checkout_start", cat.CHECKOUT_URL, {}))
        steps.append((_ORDER,))
    elif plan.cart:
        for _ in range(2 if rng.random() < 0.3 else 1):
            steps.extend(_to_cart(_random_product(c, rng)))
        if rng.random() < P_REMOVE:
            steps.append((_CLICK, "remove_from_cart", cat.CART_URL, steps[-1][3]))
        if plan.abandon_checkout:
            steps.append((_CLICK, "page_view", cat.CART_URL, {}))
            steps.append((_CLICK, "checkout_start", cat.CHECKOUT_URL, {}))
    return steps


def _gaps(steps: list[Step], rng: random.Random) -> list[int]:
    gaps = [0]
    for step in steps[1:]:
        if step[0] == _ORDER:
            gaps.append(rng.randrange(MINUTE_MS, 6 * MINUTE_MS))
        elif step[0] == _IDENTIFY:
            gaps.append(rng.randrange(SECOND_MS, 3 * SECOND_MS))
        else:
            gaps.append(_STEP_GAPS[int(rng.random() * _TABLE_SIZE)])
    return gaps


class Layout(NamedTuple):
    steps: list[Step]
    gaps: list[int]  # ms before each step (the first is 0)

    @property
    def duration(self) -> int:
        return sum(self.gaps)


def layout(c: Customer, plan: SessionPlan) -> Layout:
    """A session's pages and the time between them."""
    steps = _steps(c, plan, c.rng)
    return Layout(steps, _gaps(steps, c.rng))


def squeeze(lay: Layout, max_duration: int) -> Layout:
    """The same steps with gaps scaled down to last at most ``max_duration`` (1 ms apart at least)."""
    duration = lay.duration
    if duration <= max_duration:
        return lay
    scale = max(0, max_duration - len(lay.gaps)) / duration
    return Layout(lay.steps, [0] + [1 + int(g * scale) for g in lay.gaps[1:]])


def schedule(
    starts: list[int], durations: list[int], pauses: list[int], *, limit: int, spacing: int = SECOND_MS
) -> list[int]:
    """Start times for one person's sessions of a day so that they never overlap and end by ``limit``.

    Sessions start at their drawn times, or ``pause`` after the previous one ends; if the last would end
    after ``limit``, sessions are pushed earlier from the end, ``spacing`` apart. (The caller squeezes
    sessions that cannot fit at all.)

    >>> schedule([0, 10, 95], [20, 20, 20], [5, 5, 5], limit=100, spacing=1)
    [0, 25, 80]
    >>> schedule([0, 10, 70], [20, 20, 20], [5, 5, 5], limit=100, spacing=1)
    [0, 25, 70]
    >>> schedule([5, 30, 90], [10, 60, 20], [5, 5, 5], limit=100, spacing=1)
    [5, 19, 80]
    """
    out: list[int] = []
    free = starts[0] if starts else 0
    for start, duration, pause in zip(starts, durations, pauses, strict=True):
        t0 = max(start, free)
        out.append(t0)
        free = t0 + duration + pause
    if out and out[-1] + durations[-1] > limit:
        latest_end = limit
        for i in range(len(out) - 1, -1, -1):
            out[i] = min(out[i], latest_end - durations[i])
            latest_end = out[i] - spacing
    return out


def session(c: Customer, plan: SessionPlan, day: int, world: World, sink: Sink, *, t0: int) -> int:
    """Lay out and render a session that must start at ``t0`` (an email click's); it is squeezed to end
    within the day. Returns the time of its last event."""
    lay = squeeze(layout(c, plan), world.day_start(day + 1) - SECOND_MS - t0)
    return emit_session(c, plan, lay, world, sink, t0=t0)


def emit_session(c: Customer, plan: SessionPlan, lay: Layout, world: World, sink: Sink, *, t0: int) -> int:
    """Render a laid-out session from ``t0``; returns the time of its last event."""
    steps, gaps = lay
    person = c.person
    session_id = plan.session_id
    anon = person.anonymous_ids[plan.device]
    cid = person.customer_id if plan.known else None
    web = person.zone
    t = t0
    for step, gap in zip(steps, gaps, strict=True):
        t += gap
        kind = step[0]
        if kind == _CLICK:
            if cid is None:
                ev: dict[str, Any] = {"event_id": c.next_id(), "type": "click", "action": step[1]}
            else:
                ev = {"event_id": c.next_id(), "type": "click", "action": step[1], "customer_id": cid}
            ev["anonymous_id"] = anon
            ev["timestamp"] = format_ts(t, web)
            ev["received_at"] = None
            ev["source"] = "web"
            ev["schema_version"] = 1
            ev["session_id"] = session_id
            ev["url"] = step[2]
            if step[3]:
                ev.update(step[3])
            sink.emit(ev, t)
        elif kind == _IDENTIFY:
            cid = person.customer_id
            if c.truth.identified_ms is None:
                c.truth.identified_ms = t
            ev = {
                "event_id": c.next_id(),
                "type": "identify",
                "customer_id": cid,
                "anonymous_id": anon,
                "timestamp": format_ts(t, web),
                "received_at": None,
                "source": "web",
                "schema_version": 1,
                "traits": plan.identify_traits,
            }
            sink.emit(ev, t)
        else:
            assert plan.basket is not None
            assert cid is not None
            _order(c, plan, world, sink, cid=cid, t=t)
    return t


def _purchase(c: Customer, action: str, *, cid: str, t: int, order_id: str, total: float) -> dict[str, Any]:
    return {
        "event_id": c.next_id(),
        "type": "purchase",
        "action": action,
        "customer_id": cid,
        "timestamp": format_ts(t, SHOP_ZONE),
        "received_at": None,
        "source": "shop",
        "schema_version": 1,
        "order_id": order_id,
        "currency": c.person.currency,
        "total": total,
    }


def _order(c: Customer, plan: SessionPlan, world: World, sink: Sink, *, cid: str, t: int) -> None:
    basket: Basket | None = plan.basket
    assert basket is not None
    order_id = plan.order_id
    assert order_id is not None
    ev = _purchase(c, "order", cid=cid, t=t, order_id=order_id, total=basket.total)
    ev["items"] = basket.items
    if basket.discount is not None:
        ev["discount"] = basket.discount
    sink.emit(ev, t)
    refund = plan.refund
    if refund is None:
        return
    rt = t + refund.delay_ms
    refund_day = (rt - world.start_ms) // DAY_MS
    if refund_day < world.total_days:
        c.truth.refunded[refund_day] += refund.amount
    if rt < world.end_ms:  # dated after the emitted period: never emitted
        rev = _purchase(c, "refund", cid=cid, t=rt, order_id=order_id, total=refund.amount)
        if refund.full:
            rev["items"] = basket.items
        sink.emit(rev, rt)


def _email_event(c: Customer, plan: EmailPlan, action: str, t: int, *, link: bool = False) -> dict[str, Any]:
    cid = c.person.customer_id
    assert cid is not None
    campaign = plan.campaign
    ev: dict[str, Any] = {
        "event_id": c.next_id(),
        "type": "email",
        "action": action,
        "customer_id": cid,
        "timestamp": format_ts(t, ESP_ZONE),
        "received_at": None,
        "source": "esp",
        "schema_version": 1,
        "campaign_id": campaign.campaign_id,
        "message_id": f"m-{campaign.index}-{c.person.index}",
    }
    if link:
        ev["link_url"] = campaign.link_url
    return ev


def email(c: Customer, plan: EmailPlan, day: int, world: World, sink: Sink) -> None:
    """Sent, delivered or bounced, then maybe opened (minutes to hours later, within the day), clicked, a
    session from the link, and rarely an unsubscribe or complaint."""
    rng = c.rng
    t = plan.campaign.send_ms + rng.randrange(30 * MINUTE_MS)
    sink.emit(_email_event(c, plan, "sent", t), t)
    t += rng.randrange(2 * SECOND_MS, 60 * SECOND_MS)
    sink.emit(_email_event(c, plan, "bounced" if plan.bounced else "delivered", t), t)
    if not plan.opened:
        return
    budget = world.day_start(day + 1) - 3 * HOUR_MS - t
    delay = int(rng.expovariate(1.0 / (90 * MINUTE_MS)))
    t += delay if delay < budget else int(rng.random() * max(budget, MINUTE_MS))
    sink.emit(_email_event(c, plan, "opened", t), t)
    if plan.clicked:
        t += rng.randrange(5 * SECOND_MS, 10 * MINUTE_MS)
        sink.emit(_email_event(c, plan, "clicked", t, link=True), t)
        if plan.session is not None:
            start = t + rng.randrange(SECOND_MS, 5 * SECOND_MS)
            t = session(c, plan.session, day, world, sink, t0=start)
    if plan.unsubscribed or plan.complained:
        t += rng.randrange(10 * SECOND_MS, 2 * MINUTE_MS)
        sink.emit(_email_event(c, plan, "unsubscribed" if plan.unsubscribed else "complained", t), t)


def mention(c: Customer, day: int, world: World, sink: Sink) -> None:
    """A social post by the customer, at a local time of day following the hour profile."""
    rng = c.rng
    person = c.person
    cid = person.customer_id
    assert cid is not None
    t = world.day_start(day) + world.profile(person.zone).offset(rng.random(), rng.random())
    platform = PLATFORMS[pick(person.platform_cum, rng.random())]
    _, text = mention_text(rng, person.sentiment, pick(person.category_cum, rng.random()))
    eid = c.next_id()
    url = _PLATFORM_URLS[platform].format(h=person.handle.lstrip("@"), n=f"{person.index}{c.n_events}")
    ev = {
        "event_id": eid,
        "type": "social_mention",
        "customer_id": cid,
        "timestamp": format_ts(t, SOCIAL_ZONE),
        "received_at": None,
        "source": "social",
        "schema_version": 1,
        "platform": platform,
        "text": text,
        "url": url,
        "author_handle": person.handle,
        "followers": person.followers,
    }
    sink.emit(ev, t)
