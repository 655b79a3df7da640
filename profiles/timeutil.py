"""Event time as integer epoch milliseconds: exact arithmetic, cheap comparisons, compact storage."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Final

from profiles.config import HOUR_MS

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime, sub-millisecond part truncated (exact, no float rounding).

    >>> to_ms(datetime(2025, 1, 1, 1, 0, 0, 999, tzinfo=UTC))
    1735693200000
    """
    return (moment - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def iso(ms: int | None) -> str | None:
    """RFC 3339 UTC with milliseconds, as the profile view shows times.

    >>> iso(1735693200123)
    '2025-01-01T01:00:00.123Z'
    """
    if ms is None:
        return None
    # strftime over gmtime: half the cost of datetime.isoformat, and a profile view formats a dozen instants.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def bucket_of(ms: int) -> int:
    """The hourly bucket holding an event: bucket ``b`` covers ``((b-1) h, b h]``.

    >>> bucket_of(3_600_000), bucket_of(3_600_001)
    (1, 2)
    """
    return -(-ms // HOUR_MS)
