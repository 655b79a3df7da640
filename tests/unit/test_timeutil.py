"""``iso`` against the standard library's own formatting of the same instant."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from profiles.timeutil import from_ms, iso, to_ms

# Year 1000 to 9999: four-digit years, the range RFC 3339 and the event contract can carry.
MS = st.integers(min_value=to_ms(datetime(1000, 1, 1, tzinfo=UTC)), max_value=to_ms(datetime(9999, 12, 31, tzinfo=UTC)))


@given(MS)
def test_iso_is_the_standard_librarys_rfc_3339_with_milliseconds(ms: int) -> None:
    expected = from_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert iso(ms) == expected
