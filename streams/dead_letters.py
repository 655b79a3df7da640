"""Dead-letter records: the original bytes, untouched, with why and where from in the headers.

Header names (all values UTF-8):

- ``rapport.reason`` — a reason code: one of the contract's (``docs/events.md``), or a stage's own
  (``unsupported_currency``, ``resolve_error``, ``corrupt_resolved_record``, ``fold_error``);
- ``rapport.path``, ``rapport.message`` — the offending field and a readable explanation;
- ``rapport.source.topic``, ``rapport.source.partition``, ``rapport.source.offset`` — the record's
  coordinates, so it can be found, fixed and re-produced;
- ``rapport.rejected_at`` — when the worker refused it (RFC 3339, UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas.resolved import RawSource
from schemas.validation import Rejection


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
