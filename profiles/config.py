"""The parameters of the profile definition (``docs/profile.md``), as one immutable value.

The fold takes them as an argument rather than reading settings, so the same events and the same
``FoldConfig`` give the same profile in the worker, in a replay and in a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS

#: Window name → length in hours.
WINDOWS: Final[dict[str, int]] = {"1h": 1, "24h": 24, "7d": 7 * 24, "30d": 30 * 24, "90d": 90 * 24}
#: Hourly buckets older than this (relative to the profile's latest event) are dropped.
BUCKET_RETENTION_HOURS: Final = WINDOWS["90d"]


def _default_rates() -> dict[str, float]:
    return {"EUR": 1.0, "USD": 0.92, "GBP": 1.17}


@dataclass(frozen=True, slots=True)
class LinkLimits:
    """What one customer may hold: anonymous ids linked to it, emails it names (docs/profile.md)."""

    anonymous_ids: int
    emails: int


@dataclass(frozen=True, slots=True)
class FoldConfig:
    base_currency: str = "EUR"
    #: Base-currency units per unit of each currency. A currency missing here cannot be folded.
    fx_rates: dict[str, float] = field(default_factory=_default_rates)
    affinity_half_life_days: float = 14.0
    lapsed_after_days: int = 60
    #: How many recent event ids a profile remembers per source stream, to recognise re-sent events.
    dedup_memory: int = 64
    #: How long (before the profile's latest event) a session id is remembered for counting sessions.
    session_memory_days: int = 90
    #: How many session ids a profile remembers at most (those seen last are kept).
    session_memory_max: int = 1024
    #: How many anonymous ids a customer may hold: an identify linking one more is refused (counted).
    max_anonymous_ids: int = 1000
    #: How many emails a customer may name: an identify naming one more has it neither listed nor linked.
    max_emails: int = 100
    #: How many categories a profile keeps an affinity for at most (the strongest are kept).
    affinity_categories_max: int = 256

    @property
    def link_limits(self) -> LinkLimits:
        return LinkLimits(self.max_anonymous_ids, self.max_emails)

    @property
    def affinity_half_life_ms(self) -> float:
        return self.affinity_half_life_days * DAY_MS
