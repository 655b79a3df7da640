"""The command line's instants: RFC 3339 with an explicit offset, shared by the commands that take one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import typer

from profiles.timeutil import to_ms, unwritable


def instant_ms(value: str, option: str, unbounded: Literal["earliest", "now"]) -> int | None:
    """``unbounded`` → None (the option's open end of the retained log); ``now`` otherwise → this instant;
    else an RFC 3339 instant in ms, or a usage error (exit 2) naming ``option``. An instant before 1970 is
    1970-01-01: it comes before every record (Kafka's timestamps count from then, and refuse a negative one).

    >>> instant_ms("2025-03-01T00:00:00+01:00", "--from", "earliest"), instant_ms("earliest", "--from", "earliest")
    (1740783600000, None)
    >>> instant_ms("1960-01-01T00:00:00Z", "--from", "earliest")
    0
    """
    if value == unbounded:
        return None
    if value == "now":
        return to_ms(datetime.now(UTC))
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an RFC 3339 instant", param_hint=option) from exc
    if parsed.tzinfo is None:
        raise typer.BadParameter("give a UTC offset, e.g. 2025-03-01T00:00:00Z", param_hint=option)
    return max(0, to_ms(parsed))


def as_of_ms(as_of: datetime | None) -> int | None:
    """``--as-of`` (``rapport profile get``, ``rapport scores get``) in ms, or a usage error (exit 2): without
    a UTC offset, or outside the years 0001 to 9999 in UTC, which the answer could not write back
    (``9999-12-31T23:59:59-12:00`` is in year 10000)."""
    if as_of is None:
        return None
    if as_of.tzinfo is None:
        raise typer.BadParameter("--as-of needs a UTC offset, e.g. 2025-03-01T00:00:00Z")
    ms = to_ms(as_of)
    if (why := unwritable(ms)) is not None:
        typer.echo(f"rapport: --as-of {as_of.isoformat()} {why}", err=True)
        raise typer.Exit(2)
    return ms
