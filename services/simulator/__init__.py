"""A seeded simulator of a web shop's customers: realistic traffic plus the ground truth that generated it.

Usage::

    sim = Simulation(SimulationConfig(customers=2000, days=120, seed=42))
    for line in sim.lines():          # JSON bytes, no newline, in arrival order; single use
        ...
    for record in sim.truth_lines():  # one JSON record per person, once lines() is exhausted
        ...
    sim.stats                         # counts of events, duplicates, late and malformed lines

The generator is pure (no I/O, no wall clock): the same configuration gives byte-identical output.

**People** (:mod:`.population`). Person ``i`` draws latent traits from generators seeded by ``(seed, i)``.
Three standard-normal factors correlate them: *engagement* (activity, purchase propensity, email
responsiveness up; churn down), *value* (spend level, income band) and *mood* (sentiment of mentions; unhappy
people churn a little faster). Traits: sessions per day (lognormal, median 0.55), P(order | session)
(lognormal, median 0.05), daily churn hazard (lognormal, median 0.003), spend level (lognormal; weights five
price tiers), P(open), P(click | open), sentiment tendency in [-1, 1], mention rate, category preferences
(Dirichlet over 12 categories), discount and refund propensities, currency (EUR, or USD/GBP for US/GB
people), and identify traits (``c{i}@example.com``, name, birth year, gender, country, city, income band,
interests, consent flags). 40% are around from day 0, the others arrive on a uniform day. 80% will identify
(``customer_id`` ``c-{i:06d}``); 25% of those also use a second device from a later day.

**A day** (:mod:`.behaviour`). Day ``d`` is ``[start + d*24h, start + (d+1)*24h)``. The state at its start
(arrived, alive, engagement, days since last order, recent abandoned cart, identified devices, email
suppression) sets the drivers: organic sessions ~ Poisson(activity * engagement * weekday factor); every
session orders with ``q = min(0.9, propensity * recency dip * abandoned-cart boost)`` (0 for people who never
identify); on campaign days (every 3-5 days) mailable people (identified before today, consenting, not
suppressed) get one email, opened with ``min(0.95, p_open * sqrt(engagement))`` and clicked with
``p_click``, a click starting a session (utm_source=email) with 0.8; identified people post social mentions
~ Poisson(mention rate), with positive/negative/neutral texts about "Rapport Shop" (:mod:`.texts`). At the
end of the day the person goes silent for ever with ``min(0.5, churn_hazard * engagement^-1.5)``, then
log-engagement takes an AR(1) step (rho 0.97, sigma 0.08), so activity sags before many churns.

**Identity.** Visitors start anonymous (``a-`` + 16 hex digits per device, derived from the seed). A device
is identified by an ``identify`` event (anonymous_id + customer_id; all traits the first time, the email on
later devices) at the first checkout, at a sign-up (10% of non-buying sessions) or, for a second device, a
login (30%). Clicks carry the customer_id only from their device's identify on; emails, purchases and
mentions carry only the customer_id and happen only after the first identify.

**Sessions and purchases** (:mod:`.render`). A landing page view (direct, organic search, social or paid
search with referrer/utm fields, or the campaign link), a geometric number of product views, searches and
category pages, then for buyers: product view + add to cart per basket line, maybe a removal, cart,
identify if needed, checkout_start, and the order (1-5 lines from preferred categories and the person's
price tiers, quantities 1-3, an occasional 10-20% discount, ``total = round(sum(qty * price) - discount,
2)``). Non-buyers sometimes fill a cart (30%) and even start checkout (30% of those). A person's organic
sessions never overlap, and all sessions stay inside their day. Orders are refunded with the person's
refund propensity (~4%) 1-14 days later, fully (70%) or partly, same order_id and currency; refunds dated
after the simulated period are not emitted.

**Time.** Local hour-of-day weights peak in the evening, weekends are busier. ``web`` events carry the
visitor's local offset (+01:00, +00:00, -05:00 ...), ``shop`` and ``esp`` use ``Z``, the social vendor
``-08:00``; all with milliseconds.

**Transport and faults** (:mod:`.faults`, :mod:`.stream`). ``received_at`` is the event time plus a
collector latency (median 150 ms, at most 10 s) or, for ``late_rate`` of events, 1 hour to 3 days. Lines come
out in arrival order (ties by generation order). ``duplicate_rate`` of events are delivered again, byte for
byte, up to 10 minutes later. ``malformed_rate`` of events get an *extra* malformed companion line with id
``bad-<seed>-<n>-<reason>`` covering every rejection class of :class:`schemas.validation.Reason`, so the valid
stream is unaffected. Fault draws use their own generator: changing fault rates moves arrivals but not events.

**Ground truth** (:mod:`.truth`). One record per person: ids, latent traits, identify traits,
``identified_day``/``identified_at``, ``churn_day``/``churned_at`` and daily arrays over ``days + 90`` days
(``truth_horizon_days``): ``p_order``, ``expected_orders``, ``expected_spend`` (orders of the day net of their
expected refunds), ``p_active`` (P(any click, open or mention)), ``p_open`` (P(open | delivered)),
``engagement``, ``hazard``, and the realised ``orders``, ``gross`` and ``refunded``, in the person's currency.
These are computed from the very quantities that drive the draws, so they are exact oracles. The last 90
days are *simulated* with the same process and the same decisions but not emitted, so "spend in the next
90 days" has realised and expected ground truth at every emitted day.

Deliberate choices: a churned person stays on the mailing list (the ESP keeps sending; they never open), and
refunds of their earlier orders still happen; a person identified today is mailed from tomorrow.
"""

from services.simulator.faults import MALFORMED_PREFIX, MALFORMED_WEIGHTS
from services.simulator.stream import (
    DEFAULT_START,
    TRUTH_HORIZON_DAYS,
    Simulation,
    SimulationConfig,
    SimulationStats,
)

__all__ = [
    "DEFAULT_START",
    "MALFORMED_PREFIX",
    "MALFORMED_WEIGHTS",
    "TRUTH_HORIZON_DAYS",
    "Simulation",
    "SimulationConfig",
    "SimulationStats",
]
