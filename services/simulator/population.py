"""Who the visitors are: latent behavioural traits and the demographics their identify calls carry.

Every person ``index`` gets their own :class:`random.Random` seeded from ``(seed, index)``, so a person's
traits and behaviour do not depend on how many other people are simulated. Three standard-normal factors
correlate the traits the way real customer bases do:

* ``z_engagement`` raises activity, purchase propensity and email responsiveness and lowers churn;
* ``z_value`` raises spend level (and the reported income band);
* ``z_mood`` sets the sentiment tendency of social mentions, and unhappy customers churn a little faster.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Final

from services.simulator.catalogue import CATEGORIES, N_CATEGORIES, N_TIERS, POPULARITY, TIER_MEAN_PRICE
from services.simulator.clock import Zone, zone
from services.simulator.sampling import pick, seeded_rng

#: Share of visitors who eventually identify; the others browse anonymously for ever.
P_WILL_IDENTIFY: Final = 0.8
#: Share of identifying customers who also use a second device (a second anonymous id).
P_SECOND_DEVICE: Final = 0.25
#: Share of people already around on day 0; the others first visit on a uniformly drawn day.
P_PRESENT_AT_START: Final = 0.4

#: Basket shape, shared by generation and by the exact expected order value.
ITEMS_PER_ORDER: Final[tuple[float, ...]] = (0.45, 0.25, 0.15, 0.10, 0.05)  # P(1..5 lines)
QUANTITY: Final[tuple[float, ...]] = (0.82, 0.13, 0.05)  # P(quantity 1..3)
DISCOUNT_PCTS: Final[tuple[float, ...]] = (0.10, 0.15, 0.20)  # equally likely when a discount applies
#: P(full refund | refund); otherwise a goodwill partial refund of U(0.2, 0.8) of the total.
P_FULL_REFUND: Final = 0.7
PARTIAL_REFUND_RANGE: Final = (0.2, 0.8)

MEAN_ITEMS: Final = sum((k + 1) * p for k, p in enumerate(ITEMS_PER_ORDER))
MEAN_QUANTITY: Final = sum((k + 1) * p for k, p in enumerate(QUANTITY))
MEAN_DISCOUNT_PCT: Final = sum(DISCOUNT_PCTS) / len(DISCOUNT_PCTS)
MEAN_REFUND_SHARE: Final = P_FULL_REFUND + (1 - P_FULL_REFUND) * sum(PARTIAL_REFUND_RANGE) / 2

ITEMS_CUM: Final = tuple(accumulate(ITEMS_PER_ORDER))
QUANTITY_CUM: Final = tuple(accumulate(QUANTITY))

# country, weight, cities with their UTC offsets in minutes (fixed; no daylight saving)
_COUNTRIES: Final[tuple[tuple[str, float, tuple[tuple[str, int], ...]], ...]] = (
    ("DE", 0.24, (("Berlin", 60), ("Hamburg", 60), ("Munich", 60), ("Cologne", 60))),
    ("FR", 0.16, (("Paris", 60), ("Lyon", 60), ("Marseille", 60), ("Toulouse", 60))),
    ("GB", 0.12, (("London", 0), ("Manchester", 0), ("Leeds", 0), ("Bristol", 0))),
    ("US", 0.12, (("New York", -300), ("Chicago", -360), ("Austin", -360), ("Los Angeles", -480))),
    ("ES", 0.09, (("Madrid", 60), ("Barcelona", 60), ("Valencia", 60))),
    ("IT", 0.09, (("Rome", 60), ("Milan", 60), ("Turin", 60))),
    ("NL", 0.07, (("Amsterdam", 60), ("Rotterdam", 60), ("Utrecht", 60))),
    ("BE", 0.04, (("Brussels", 60), ("Antwerp", 60))),
    ("AT", 0.04, (("Vienna", 60), ("Graz", 60))),
    ("IE", 0.03, (("Dublin", 0), ("Cork", 0))),
)
_COUNTRY_CUM: Final = tuple(accumulate(w for _, w, _ in _COUNTRIES))
_CURRENCY: Final = {"US": "USD", "GB": "GBP"}
_ZONES: Final[dict[int, Zone]] = {m: zone(m) for m in (60, 0, -300, -360, -480)}

_FIRST: Final = (
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Katrin", "Luca",
    "Mia", "Noah", "Olivia", "Paul", "Quentin", "Rosa", "Sofia", "Tom", "Ula", "Victor", "Wen", "Yara",
    "Zoe", "Amir", "Chloe", "Emma", "James", "Lea", "Marco", "Nina", "Oscar", "Priya", "Sam", "Lucia",
)  # fmt: skip
_LAST: Final = (
    "Müller", "Schmidt", "Martin", "Bernard", "Smith", "Jones", "García", "Rossi", "Jansen", "Peeters",
    "Gruber", "Murphy", "Johnson", "Brown", "Dubois", "Fischer", "Romano", "López", "de Vries", "Weber",
    "Kelly", "Taylor", "Moreau", "Bianchi", "Novak", "Khan", "Nguyen", "Silva", "Walsh", "Wagner",
)  # fmt: skip
_GENDERS: Final = (("female", 0.48), ("male", 0.46), ("non-binary", 0.02), (None, 0.04))
_GENDER_CUM: Final = tuple(accumulate(w for _, w in _GENDERS))
_INCOME_BANDS: Final = ("<25k", "25-50k", "50-100k", ">100k")
PLATFORMS: Final = ("twitter", "instagram", "reddit", "tiktok")
_PLATFORM_CUM: Final = tuple(accumulate((0.35, 0.3, 0.2, 0.15)))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def anonymous_id(seed: int, index: int, device: int) -> str:
    """A stable device id, ``a-`` and 16 hex digits derived from (seed, person, device)."""
    return "a-" + hashlib.blake2b(f"{seed}:{index}:{device}".encode(), digest_size=8).hexdigest()


def customer_id(index: int) -> str:
    return f"c-{index:06d}"


@dataclass(slots=True)
class Person:
    """One visitor: fixed latent traits, derived sampling tables and identify traits."""

    index: int
    customer_id: str | None  # None: never identifies
    anonymous_ids: tuple[str, ...]  # one per device
    second_device_day: int | None  # first day the second device may be used
    arrival_day: int
    zone: Zone  # the web app reports this person's local offset
    currency: str
    # latent traits (see ``traits()`` for meanings)
    activity: float
    purchase_propensity: float
    churn_hazard: float
    spend_level: float
    p_open: float
    p_click: float
    sentiment: float
    mention_rate: float
    category_prefs: tuple[float, ...]
    discount_rate: float
    refund_rate: float
    initial_engagement: float
    followers: int
    # derived
    category_cum: tuple[float, ...]
    tier_cum: tuple[float, ...]
    tier_weights: tuple[float, ...]
    expected_order_value: float  # E[order total] after discounts
    expected_net_order_value: float  # ... minus the expected refund of that order
    identify_traits: dict[str, Any]
    email: str
    handle: str
    platform_cum: tuple[float, ...]
    email_marketing: bool

    def traits(self) -> dict[str, Any]:
        """The latent traits, for the ground-truth file."""
        return {
            "activity": self.activity,
            "purchase_propensity": self.purchase_propensity,
            "churn_hazard": self.churn_hazard,
            "spend_level": self.spend_level,
            "p_open": self.p_open,
            "p_click": self.p_click,
            "sentiment_tendency": self.sentiment,
            "mention_rate": self.mention_rate,
            "category_prefs": dict(zip(CATEGORIES, self.category_prefs, strict=True)),
            "discount_rate": self.discount_rate,
            "refund_rate": self.refund_rate,
            "initial_engagement": self.initial_engagement,
            "tier_weights": list(self.tier_weights),
            "expected_order_value": self.expected_order_value,
            "expected_net_order_value": self.expected_net_order_value,
            "will_identify": self.customer_id is not None,
            "second_device_day": self.second_device_day,
            "arrival_day": self.arrival_day,
            "currency": self.currency,
            "utc_offset": self.zone.suffix,
        }


def expected_unit_price(currency: str, category_prefs: tuple[float, ...], tier_weights: tuple[float, ...]) -> float:
    means = TIER_MEAN_PRICE[currency]
    return sum(pc * sum(wt * means[c][t] for t, wt in enumerate(tier_weights)) for c, pc in enumerate(category_prefs))


def draw_person(seed: int, index: int, days: int, start_year: int) -> Person:
    """Draw person ``index``'s traits; deterministic in (seed, index, days, start_year)."""
    rng = seeded_rng(seed, index, "traits")
    gauss = rng.gauss
    z_eng, z_val, z_mood = gauss(0, 1), gauss(0, 1), gauss(0, 1)

    activity = math.exp(math.log(0.55) + 0.9 * (0.6 * z_eng + 0.8 * gauss(0, 1)))
    propensity = _clip(math.exp(math.log(0.05) + 0.6 * (0.5 * z_eng + 0.866 * gauss(0, 1))), 0.003, 0.5)
    churn = _clip(math.exp(math.log(0.003) + 0.7 * (-0.5 * z_eng - 0.3 * z_mood + 0.81 * gauss(0, 1))), 2e-4, 0.1)
    spend = math.exp(0.45 * (0.7 * z_val + 0.714 * gauss(0, 1)))
    p_open = _clip(_sigmoid(-1.2 + 0.8 * z_eng + 0.8 * gauss(0, 1)), 0.01, 0.9)
    p_click = _clip(_sigmoid(-1.8 + 0.5 * z_eng + 0.6 * gauss(0, 1)), 0.01, 0.8)
    sentiment = _clip(0.25 + 0.5 * z_mood, -1.0, 1.0)
    mention_rate = min(0.3, math.exp(math.log(0.006) + 1.2 * gauss(0, 1)))
    raw = [rng.gammavariate(0.6 * a, 1.0) + 1e-9 for a in POPULARITY]
    total = sum(raw)
    prefs = tuple(x / total for x in raw)
    discount_rate = rng.betavariate(2, 8)
    refund_rate = rng.betavariate(1, 24)
    initial_engagement = gauss(0, 0.3)
    followers = int(math.exp(math.log(300) + 1.6 * gauss(0, 1)))

    centre = 2 + math.log(spend) / 0.45
    tw = [math.exp(-((t - centre) ** 2) / (2 * 0.8**2)) for t in range(N_TIERS)]
    tw_total = sum(tw)
    tier_weights = tuple(w / tw_total for w in tw)

    country, _, cities = _COUNTRIES[pick(_COUNTRY_CUM, rng.random())]
    city, offset = cities[rng.randrange(len(cities))]
    currency = _CURRENCY.get(country, "EUR")

    mean_price = expected_unit_price(currency, prefs, tier_weights)
    order_value = MEAN_ITEMS * MEAN_QUANTITY * mean_price * (1 - discount_rate * MEAN_DISCOUNT_PCT)
    net_order_value = order_value * (1 - refund_rate * MEAN_REFUND_SHARE)

    will_identify = rng.random() < P_WILL_IDENTIFY
    two_devices = will_identify and rng.random() < P_SECOND_DEVICE
    arrival = 0 if rng.random() < P_PRESENT_AT_START else rng.randrange(max(1, days))
    second_day = arrival + rng.randrange(1, 60) if two_devices else None

    first, last = _FIRST[rng.randrange(len(_FIRST))], _LAST[rng.randrange(len(_LAST))]
    age = int(_clip(gauss(38, 13), 18, 85))
    gender = _GENDERS[pick(_GENDER_CUM, rng.random())][0]
    income = _INCOME_BANDS[int(_clip(1.5 + 1.1 * (0.7 * z_val + 0.7 * gauss(0, 1)), 0, 3.999))]
    ranked = sorted(range(N_CATEGORIES), key=lambda c: -prefs[c])
    interests = [CATEGORIES[c] for c in ranked[: rng.randint(2, 4)]]
    email_marketing = rng.random() < 0.55 + 0.25 * _sigmoid(z_eng)
    consent = {"email_marketing": email_marketing, "personalization": rng.random() < 0.8}
    email = f"c{index}@example.com"
    identify_traits: dict[str, Any] = {
        "email": email,
        "name": f"{first} {last}",
        "birth_year": start_year - age,
    }
    if gender is not None:
        identify_traits["gender"] = gender
    identify_traits.update(country=country, city=city, income_band=income, interests=interests, consent=consent)
    handle_base = "".join(ch for ch in f"{first}{last[:4]}".lower() if ch.isascii() and ch.isalpha())
    main_platform = pick(_PLATFORM_CUM, rng.random())
    platform_cum = tuple(accumulate(0.8 if k == main_platform else 0.2 / 3 for k in range(len(PLATFORMS))))

    return Person(
        index=index,
        customer_id=customer_id(index) if will_identify else None,
        anonymous_ids=tuple(anonymous_id(seed, index, k) for k in range(2 if two_devices else 1)),
        second_device_day=second_day,
        arrival_day=arrival,
        zone=_ZONES[offset],
        currency=currency,
        activity=activity,
        purchase_propensity=propensity,
        churn_hazard=churn,
        spend_level=spend,
        p_open=p_open,
        p_click=p_click,
        sentiment=sentiment,
        mention_rate=mention_rate,
        category_prefs=prefs,
        discount_rate=discount_rate,
        refund_rate=refund_rate,
        initial_engagement=initial_engagement,
        followers=followers,
        category_cum=tuple(accumulate(prefs)),
        tier_cum=tuple(accumulate(tier_weights)),
        tier_weights=tier_weights,
        expected_order_value=order_value,
        expected_net_order_value=net_order_value,
        identify_traits=identify_traits,
        email=email,
        handle=f"@{handle_base}{index % 1000}",
        platform_cum=platform_cum,
        email_marketing=email_marketing,
    )
