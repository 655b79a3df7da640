"""Simulated time: integer epoch milliseconds, day windows, seasonality and RFC 3339 formatting.

Simulated day ``d`` is the 24-hour window ``[start + d·24h, start + (d+1)·24h)``; everything in the ground
truth is indexed by it. Times are plain ``int`` milliseconds since the Unix epoch (fast to add and compare);
they become text only when an event is rendered, with millisecond precision and an explicit offset.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Final, NamedTuple

SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: Relative traffic by local hour of day: quiet nights, a lunch bump, an evening peak (19-22h).
HOUR_WEIGHTS: Final[tuple[float, ...]] = (
    0.8, 0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1.2, 1.8, 2.0, 2.1, 2.3,
    2.8, 2.6, 2.2, 2.1, 2.2, 2.6, 3.2, 4.0, 4.4, 4.2, 3.2, 1.8,
)  # fmt: skip

#: Multiplier of activity by weekday (Monday first); weekends peak. Mean is exactly 1.
WEEKDAY_FACTORS: Final[tuple[float, ...]] = (0.92, 0.88, 0.9, 0.95, 1.0, 1.2, 1.15)


class Zone(NamedTuple):
    """A fixed UTC offset as events spell it (``Z``, ``+00:00``, ``+01:00``, ``-05:00``)."""

    offset_ms: int
    suffix: str


UTC_Z: Final = Zone(0, "Z")


def zone(minutes: int, *, z: bool = False) -> Zone:
    """The zone ``minutes`` east of UTC; ``z`` spells a zero offset ``Z`` instead of ``+00:00``.

    >>> zone(60).suffix, zone(-330).suffix, zone(0).suffix, zone(0, z=True).suffix
    ('+01:00', '-05:30', '+00:00', 'Z')
    """
    if minutes == 0 and z:
        return UTC_Z
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return Zone(minutes * MINUTE_MS, f"{sign}{hours:02d}:{mins:02d}")


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


_HOUR_PREFIX: dict[int, str] = {}
_MINUTES: Final = tuple(f"{m:02d}:" for m in range(60))
_SECONDS_MILLIS: Final = tuple(f"{s:02d}.{ms:03d}" for s in range(60) for ms in range(1000))


def _hour_prefix(epoch_hour: int) -> str:
    text = _HOUR_PREFIX.get(epoch_hour)
    if text is None:
        if len(_HOUR_PREFIX) > 100_000:
            _HOUR_PREFIX.clear()
        text = _HOUR_PREFIX[epoch_hour] = (_EPOCH + timedelta(hours=epoch_hour)).strftime("%Y-%m-%dT%H:")
    return text


def format_ts(ms: int, tz: Zone) -> str:
    """RFC 3339 with millisecond precision in ``tz``.

    >>> format_ts(1_735_693_200_123, zone(60))
    '2025-01-01T02:00:00.123+01:00'
    >>> format_ts(1_735_693_200_123, UTC_Z)
    '2025-01-01T01:00:00.123Z'
    >>> format_ts(-1, UTC_Z)
    '1969-12-31T23:59:59.999Z'
    """
    offset, suffix = tz
    epoch_hour, rem = divmod(ms + offset, HOUR_MS)
    prefix = _HOUR_PREFIX.get(epoch_hour)
    if prefix is None:
        prefix = _hour_prefix(epoch_hour)
    minute, rem = divmod(rem, MINUTE_MS)
    return f"{prefix}{_MINUTES[minute]}{_SECONDS_MILLIS[rem]}{suffix}"


def weekday_factor(day_start_ms: int) -> float:
    """Activity multiplier of the simulated day starting at ``day_start_ms`` (weekday of its UTC midpoint)."""
    epoch_day = (day_start_ms + DAY_MS // 2) // DAY_MS
    return WEEKDAY_FACTORS[(epoch_day + 3) % 7]  # 1970-01-01 was a Thursday


class HourProfile:
    """Samples a time of day inside a day window following :data:`HOUR_WEIGHTS` in one local zone.

    The window need not start at midnight: hour slot ``k`` of the window is local hour
    ``(local hour of the window start + k) mod 24``.
    """

    __slots__ = ("_cum", "_total")

    def __init__(self, window_start_ms: int, tz: Zone) -> None:
        first_hour = ((window_start_ms + tz.offset_ms) % DAY_MS) // HOUR_MS
        weights = [HOUR_WEIGHTS[(first_hour + k) % 24] for k in range(24)]
        self._cum = list(accumulate(weights))
        self._total = self._cum[-1]

    def offset(self, u_slot: float, u_within: float) -> int:
        """Milliseconds from the window start for two uniform draws."""
        slot = bisect_right(self._cum, u_slot * self._total)
        return int((min(slot, 23) + u_within) * HOUR_MS)
