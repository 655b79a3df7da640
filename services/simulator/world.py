"""What every person shares: the calendar, the email campaign schedule, hour profiles, the event sink."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from services.simulator import catalogue as cat
from services.simulator.clock import DAY_MS, HOUR_MS, HourProfile, Zone, weekday_factor
from services.simulator.sampling import seeded_rng

#: Campaigns go out around this UTC hour (moved earlier when the day windows do not start at midnight).
CAMPAIGN_HOUR_UTC: Final = 9


class Sink(Protocol):
    """Where rendered events go; ``ts_ms`` is the event time (``received_at`` is still ``None``)."""

    def emit(self, event: dict[str, Any], ts_ms: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Campaign:
    index: int
    day: int
    campaign_id: str
    category: int
    send_ms: int
    link_url: str


@dataclass(slots=True)
class World:
    seed: int
    start_ms: int
    days: int  # emitted days
    total_days: int  # emitted + truth-only days
    campaigns: dict[int, Campaign]
    profiles: dict[Zone, HourProfile] = field(default_factory=dict)
    weekday_factors: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.weekday_factors = tuple(weekday_factor(self.day_start(d)) for d in range(self.total_days))

    @property
    def end_ms(self) -> int:
        """End of the emitted period: nothing later is emitted."""
        return self.start_ms + self.days * DAY_MS

    def day_start(self, day: int) -> int:
        return self.start_ms + day * DAY_MS

    def profile(self, tz: Zone) -> HourProfile:
        prof = self.profiles.get(tz)
        if prof is None:
            prof = self.profiles[tz] = HourProfile(self.start_ms, tz)
        return prof


def campaign_schedule(seed: int, start_ms: int, total_days: int) -> dict[int, Campaign]:
    """A campaign every 3-5 days from day 1 or 2, each featuring one category.

    Sends start around 09:00 UTC and spread over 30 minutes; when the day windows do not start at midnight
    the send time is kept at least 10 hours before the window ends, so opens and clicks fit in the same day.
    """
    rng = seeded_rng(seed, "campaigns")
    aligned = (CAMPAIGN_HOUR_UTC * HOUR_MS - start_ms) % DAY_MS
    send_offset = aligned if aligned <= 14 * HOUR_MS else 2 * HOUR_MS
    out: dict[int, Campaign] = {}
    day = 1 + rng.randrange(2)
    index = 0
    while day < total_days:
        category = rng.randrange(cat.N_CATEGORIES)
        cid = f"cmp-{index:04d}-{cat.CATEGORIES[category]}"
        link = f"{cat.CATEGORY_URLS[category]}?utm_source=email&utm_medium=email&utm_campaign={cid}"
        send = start_ms + day * DAY_MS + send_offset
        out[day] = Campaign(index, day, cid, category, send, link)
        index += 1
        day += rng.randint(3, 5)
    return out
