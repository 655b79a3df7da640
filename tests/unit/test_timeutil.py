"""``iso`` against the standard library's own formatting of the same instant; ``to_ms`` against the
standard library's timedelta arithmetic, in fixed offsets (cached) and in zones whose offset changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiles.timeutil import MAX_MS, MIN_MS, formattable, from_ms, iso, to_ms

# Year 0001 to 9999: four-digit years, the range RFC 3339 can carry (strftime wrote years before 1000 unpadded).
MS = st.integers(min_value=MIN_MS, max_value=MAX_MS)


@given(MS)
def test_iso_is_the_standard_librarys_rfc_3339_with_milliseconds(ms: int) -> None:
    expected = from_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert iso(ms) == expected


def test_formattable_is_exactly_what_iso_can_write() -> None:
    """Callers check an instant from outside (an ``as_of``) with it: one millisecond past either end, ``iso``
    overflows."""
    assert (iso(MIN_MS), iso(MAX_MS)) == ("0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z")
    assert formattable(MIN_MS)
    assert formattable(MAX_MS)
    year_10000 = to_ms(datetime.fromisoformat("9999-12-31T23:59:59-12:00"))
    for outside in (MIN_MS - 1, MAX_MS + 1, year_10000):
        assert not formattable(outside)
        with pytest.raises(OverflowError):
            iso(outside)


ZONES = st.one_of(
    st.integers(min_value=-24 * 60 + 1, max_value=24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m))),
    st.integers(min_value=-86399, max_value=86399).map(lambda s: timezone(timedelta(seconds=s))),
    st.just(timezone(timedelta(microseconds=1))),  # not whole seconds: never cached
    st.sampled_from([ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe")]),
)


@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)), ZONES)
def test_to_ms_is_the_exact_epoch_difference_in_any_zone(naive: datetime, zone: timezone | ZoneInfo) -> None:
    moment = naive.replace(tzinfo=zone)
    expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert to_ms(moment) == expected
    assert to_ms(moment) == expected  # again, with the offset now known
