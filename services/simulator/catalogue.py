"""The simulated shop: categories, a fixed product catalogue with price tiers, search terms, pages.

The catalogue does not depend on the seed, so product ids mean the same thing in every run. Each category
has five price tiers (budget … luxury) of :data:`PRODUCTS_PER_TIER` products with fixed prices per currency;
a customer's spend level weights the tiers, so their exact expected item price is a short weighted sum.
"""

from __future__ import annotations

from typing import Final

from services.simulator.sampling import seeded_rng

CATEGORIES: Final[tuple[str, ...]] = (
    "shoes", "electronics", "books", "beauty", "home", "toys",
    "sports", "fashion", "grocery", "garden", "music", "games",
)  # fmt: skip
N_CATEGORIES: Final = len(CATEGORIES)

#: Overall popularity of each category: the Dirichlet base measure of customers' preferences.
POPULARITY: Final[tuple[float, ...]] = (1.2, 1.0, 0.9, 1.0, 1.1, 0.6, 0.8, 1.4, 0.7, 0.5, 0.4, 0.6)

#: Typical EUR price of a mid-tier item per category.
BASE_PRICE_EUR: Final[tuple[float, ...]] = (70.0, 180.0, 15.0, 25.0, 45.0, 30.0, 50.0, 40.0, 8.0, 35.0, 20.0, 45.0)

TIER_MULTIPLIERS: Final[tuple[float, ...]] = (0.45, 0.7, 1.0, 1.5, 2.6)
N_TIERS: Final = len(TIER_MULTIPLIERS)
PRODUCTS_PER_TIER: Final = 30

#: Price of one EUR in each supported currency (fixed for the simulation).
FX_FROM_EUR: Final[dict[str, float]] = {"EUR": 1.0, "USD": 1.08, "GBP": 0.85}

SHOP_URL: Final = "https://rapport.shop"
BRAND: Final = "Rapport Shop"

SEARCH_TERMS: Final[tuple[tuple[str, ...], ...]] = (
    ("running shoes", "sneakers", "leather boots", "sandals", "trail runners"),
    ("headphones", "usb c charger", "smart watch", "bluetooth speaker", "4k monitor"),
    ("crime novel", "cookbook", "fantasy series", "biography", "kids books"),
    ("face cream", "shampoo", "perfume", "sunscreen", "lipstick"),
    ("bed linen", "coffee maker", "desk lamp", "storage boxes", "throw pillows"),
    ("lego", "puzzle", "plush toy", "board game for kids", "rc car"),
    ("yoga mat", "dumbbells", "cycling jersey", "tennis racket", "water bottle"),
    ("summer dress", "denim jacket", "wool sweater", "scarf", "t shirt"),
    ("coffee beans", "olive oil", "dark chocolate", "green tea", "pasta"),
    ("garden hose", "plant pots", "seeds", "pruning shears", "bbq"),
    ("vinyl", "guitar strings", "earbuds", "jazz records", "ukulele"),
    ("ps5 games", "switch controller", "strategy game", "gaming mouse", "rpg"),
)


def _build_prices() -> dict[str, tuple[tuple[tuple[float, ...], ...], ...]]:
    rng = seeded_rng("catalogue", 1)
    factors = [
        [[rng.uniform(0.8, 1.2) for _ in range(PRODUCTS_PER_TIER)] for _ in range(N_TIERS)] for _ in range(N_CATEGORIES)
    ]
    prices: dict[str, tuple[tuple[tuple[float, ...], ...], ...]] = {}
    for currency, fx in FX_FROM_EUR.items():
        prices[currency] = tuple(
            tuple(
                tuple(max(0.99, round(BASE_PRICE_EUR[c] * TIER_MULTIPLIERS[t] * f * fx) - 0.01) for f in factors[c][t])
                for t in range(N_TIERS)
            )
            for c in range(N_CATEGORIES)
        )
    return prices


#: ``PRICES[currency][category][tier][j]``: unit price of product ``product_id(category, tier, j)``.
PRICES: Final = _build_prices()

#: ``TIER_MEAN_PRICE[currency][category][tier]``: the exact mean unit price of a tier.
TIER_MEAN_PRICE: Final[dict[str, tuple[tuple[float, ...], ...]]] = {
    cur: tuple(tuple(sum(tier) / len(tier) for tier in cat) for cat in by_cat) for cur, by_cat in PRICES.items()
}

#: ``PRODUCT_IDS[category][tier][j]``.
PRODUCT_IDS: Final[tuple[tuple[tuple[str, ...], ...], ...]] = tuple(
    tuple(tuple(f"p-{CATEGORIES[c]}-{t}{j:02d}" for j in range(PRODUCTS_PER_TIER)) for t in range(N_TIERS))
    for c in range(N_CATEGORIES)
)

CATEGORY_URLS: Final[tuple[str, ...]] = tuple(f"{SHOP_URL}/c/{c}" for c in CATEGORIES)
PRODUCT_URLS: Final[tuple[tuple[tuple[str, ...], ...], ...]] = tuple(
    tuple(tuple(f"{SHOP_URL}/p/{pid}" for pid in tier) for tier in cat) for cat in PRODUCT_IDS
)
SEARCH_URLS: Final[tuple[tuple[str, ...], ...]] = tuple(
    tuple(f"{SHOP_URL}/search?q={term.replace(' ', '+')}" for term in terms) for terms in SEARCH_TERMS
)
HOME_URL: Final = f"{SHOP_URL}/"
CART_URL: Final = f"{SHOP_URL}/cart"
CHECKOUT_URL: Final = f"{SHOP_URL}/checkout"
OTHER_PAGES: Final[tuple[str, ...]] = (
    HOME_URL, f"{SHOP_URL}/sale", f"{SHOP_URL}/new", f"{SHOP_URL}/account", f"{SHOP_URL}/help/shipping",
)  # fmt: skip
