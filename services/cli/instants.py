"""The command line's instants: RFC 3339 with an explicit offset, shared by the commands that take one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import typer

from profiles.timeutil import to_ms


def instant_ms(value: str, option: str, unbounded: Literal["earliest", "now"]) -> int | None:
    """``unbounded`` → None (the option's open end of the retained log); ``now`` otherwise → this instant;
    else an RFC 3339 instant in ms, or a usage error (exit 2) naming ``option``."""
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
    return to_ms(parsed)
