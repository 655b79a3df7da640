"""Dead-letter records: the original bytes, untouched, with why and where from in the headers.

Header names (all values UTF-8):

- ``rapport.reason`` — a reason code: one of the contract's (``docs/events.md``), or a stage's own
  (``unsupported_currency``, ``resolve_error``, ``corrupt_resolved_record``, ``fold_error``,
  ``unreadable_profile``);
- ``rapport.path``, ``rapport.message`` — the offending field and a readable explanation;
- ``rapport.source.topic``, ``rapport.source.partition``, ``rapport.source.offset`` — the record's
  coordinates, so it can be found, fixed and re-produced;
- ``rapport.rejected_at`` — when the worker refused it (RFC 3339, UTC).

A record that ``rapport dlq redrive`` sends back to its raw topic carries ``rapport.redriven_from``
(``topic:partition:offset`` of its dead letter), by which an interrupted redrive finds what it already sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from schemas.resolved import RawSource
from schemas.validation import Reason, Rejection


class StageReason(StrEnum):
    """The reasons the worker's stages add to the contract's (``schemas.validation.Reason``)."""

    UNSUPPORTED_CURRENCY = "unsupported_currency"  # a purchase in a currency without a configured rate
    INVALID_ERASURE = "invalid_erasure"  # an ``erasures`` record that does not decode
    RESOLVE_ERROR = "resolve_error"  # a raw record whose identity resolution raised (a defect)
    CORRUPT_RESOLVED_RECORD = "corrupt_resolved_record"  # an ``events.resolved`` record no worker wrote
    FOLD_ERROR = "fold_error"  # an ``events.resolved`` record whose fold raised (a defect)
    UNREADABLE_PROFILE = "unreadable_profile"  # an ``events.resolved`` record whose stored profile does not decode


#: Every reason a dead letter can carry.
REASONS: Final = (*(reason.value for reason in Reason), *(reason.value for reason in StageReason))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    path: str
    message: str

    @classmethod
    def from_rejection(cls, rejection: Rejection) -> DeadLetter:
        return cls(rejection.code.value, rejection.path, rejection.message)


def dead_letter(reason: DeadLetter, source: RawSource, now: datetime) -> list[tuple[str, bytes]]:
    """The headers of a dead-lettered record."""
    return [
        ("rapport.reason", reason.reason.encode()),
        ("rapport.path", reason.path.encode()),
        ("rapport.message", reason.message.encode()),
        ("rapport.source.topic", source.topic.encode()),
        ("rapport.source.partition", str(source.partition).encode()),
        ("rapport.source.offset", str(source.offset).encode()),
        ("rapport.rejected_at", now.isoformat(timespec="milliseconds").encode()),
    ]


#: The header of a record re-sent from the dead-letter topic.
REDRIVEN_FROM: Final = "rapport.redriven_from"


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """What a dead-lettered record's headers say: why, where from (None if they do not say), and when."""

    reason: str
    source: RawSource | None
    rejected_at: str


def read_dead_letter(headers: Iterable[tuple[str, bytes]]) -> DeadLettered | None:
    """The headers ``dead_letter`` wrote, read back; None for a record without a reason (not Rapport's).

    >>> from datetime import UTC, datetime
    >>> why, source = DeadLetter("malformed_json", "", "x"), RawSource("events.clicks", 2, 7)
    >>> read = read_dead_letter(dead_letter(why, source, datetime.now(UTC)))
    >>> read.reason, read.source
    ('malformed_json', RawSource(topic='events.clicks', partition=2, offset=7))
    >>> read_dead_letter([("rapport.reason", b"malformed_json")]).source is None
    True
    """
    values = {name: value.decode("utf-8", "replace") for name, value in headers}
    reason = values.get("rapport.reason")
    if not reason:
        return None
    try:
        source: RawSource | None = RawSource(
            values["rapport.source.topic"],
            int(values["rapport.source.partition"]),
            int(values["rapport.source.offset"]),
        )
    except (KeyError, ValueError):
        source = None
    return DeadLettered(reason, source, values.get("rapport.rejected_at", ""))
