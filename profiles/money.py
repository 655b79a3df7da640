"""Converting event amounts to integer cents of the base currency, once per amount."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Final

from profiles.config import FoldConfig

_HUNDRED: Final = Decimal(100)
_ONE: Final = Decimal(1)
#: Wide enough for the product of any amount the contract accepts (17 significant digits, at most 1e15), a
#: line's quantity and a rate, kept exact: the default context's 28 digits made a total of 1e26 raise
#: ``InvalidOperation`` in the fold, which the worker retried without end.
_EXACT: Final = Context(prec=80, rounding=ROUND_HALF_UP)


class UnsupportedCurrencyError(ValueError):
    """The event's currency has no rate in the configured table: it cannot be added to any total."""

    def __init__(self, currency: str) -> None:
        super().__init__(f"no exchange rate configured for {currency}")
        self.currency = currency


def to_cents(amount: float, currency: str, config: FoldConfig) -> int:
    """Base-currency cents of ``amount``, rounding half away from zero.

    Amounts and rates are taken as the decimal numbers they are written as (``1.005`` is 1.005, not the
    nearest binary float), so the result does not depend on floating-point representation.

    >>> to_cents(59.9, "EUR", FoldConfig())
    5990
    >>> to_cents(1.005, "EUR", FoldConfig())
    101
    >>> to_cents(10, "USD", FoldConfig(fx_rates={"USD": 0.92}))
    920
    """
    return line_cents(1, amount, currency, config)


def line_cents(quantity: int, unit_price: float, currency: str, config: FoldConfig) -> int:
    """Base-currency cents of ``quantity × unit_price``, computed exactly and rounded once.

    >>> line_cents(3, 0.335, "EUR", FoldConfig())
    101
    >>> line_cents(1_000_000, 1e15, "IRR", FoldConfig(fx_rates={"IRR": 123456.789}))
    12345678900000000000000000000
    """
    try:
        rate = config.fx_rates[currency]
    except KeyError:
        raise UnsupportedCurrencyError(currency) from None
    exact = _EXACT.multiply(_EXACT.multiply(Decimal(repr(unit_price)), quantity), Decimal(repr(rate)))
    return int(_EXACT.multiply(exact, _HUNDRED).quantize(_ONE, context=_EXACT))


def div_round(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half away from zero, in exact integer arithmetic.

    >>> div_round(5, 2), div_round(-5, 2), div_round(7, 3), div_round(-1, 32)
    (3, -3, 2, 0)
    """
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return quotient if numerator >= 0 else -quotient
