"""Turning raw bytes into a valid event, or into a machine-readable rejection.

This is the single validator used by ``rapport produce``, the HTTP collector and the stream workers, so an
event accepted at one door is accepted at every door. It is pure: the clock is a parameter.

>>> from datetime import datetime, timezone
>>> now = datetime(2025, 1, 1, tzinfo=timezone.utc)
>>> limits = ValidationLimits()
>>> validate_event(b'{"event_id": 1}', now=now, limits=limits).code.value
'missing_type'
>>> bad = validate_event(b'{"type": "click", "event_id": "e1", "customer_id": "c1",'
...     b' "timestamp": "2025-01-01T00:00:00Z", "action": "fly", "url": "/", "session_id": "s"}',
...     now=now, limits=limits)
>>> (bad.code.value, bad.path)
('unknown_action', 'action')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

import msgspec

from schemas.events import EVENT_DECODER, AnyEvent


class Reason(StrEnum):
    """Why an event was rejected. Stable identifiers: dashboards and producers match on them."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_TYPE = "missing_type"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_ACTION = "unknown_action"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_IDENTITY = "missing_identity"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an event: a reason code, where (a dotted path, ``items[0].quantity``) and why."""

    code: Reason
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "path": self.path, "message": self.message}


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rejected event. ``code``/``path``/``message`` describe the first problem; ``problems`` has all."""

    problems: tuple[Problem, ...]

    @property
    def code(self) -> Reason:
        return self.problems[0].code

    @property
    def path(self) -> str:
        return self.problems[0].path

    @property
    def message(self) -> str:
        return self.problems[0].message

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code.value,
            "path": self.path,
            "message": self.message,
            "problems": [p.as_dict() for p in self.problems],
        }


#: The default oldest event time accepted: a timestamp before it is almost always an unset clock or field
#: (1970-01-01, 0001-01-01) or a typo in the year, and would date a profile's history decades back.
OLDEST_TIMESTAMP: Final = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    max_event_bytes: int = 64 * 1024
    future_tolerance: timedelta = field(default_factory=lambda: timedelta(minutes=5))
    oldest: datetime = OLDEST_TIMESTAMP


_TIMESTAMP_FIELDS: Final = frozenset({"timestamp", "received_at"})
# msgspec reports the first problem as "<message> - at `$.<path>`"; the message's shape gives the reason.
_AT_PATH: Final = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD_NAMED: Final = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<field>[^`]+)`")
_WRONG_TYPE: Final = re.compile(r"^Expected `[^`]+`, got `[^`]+`$")


#: Between the customer and the claiming event in a stored identity link (``profiles.store``).
LINK_SEPARATOR: Final = "\x1f"


def validate_event(raw: bytes, *, now: datetime, limits: ValidationLimits) -> AnyEvent | Rejection:
    """Parse and validate one event; never raises on bad input."""
    if len(raw) > limits.max_event_bytes:
        return _reject(Reason.PAYLOAD_TOO_LARGE, "", f"{len(raw)} bytes exceeds the limit of {limits.max_event_bytes}")
    event = decode_event(raw)
    if isinstance(event, Rejection):
        return event
    # One subtraction across time zones (the slow part) serves both bounds: comparing the event's time
    # with ``oldest`` directly converted it again (~0.4 µs an event, a sixth of validating it).
    ahead_of_now = event.timestamp - now
    if ahead_of_now > limits.future_tolerance:
        ahead = f"more than {limits.future_tolerance} ahead of {now.isoformat()}"
        return _reject(Reason.TIMESTAMP_IN_FUTURE, "timestamp", f"{event.timestamp.isoformat()} is {ahead}")
    if ahead_of_now < limits.oldest - now:
        before = f"before the oldest accepted, {limits.oldest.isoformat()}"
        return _reject(Reason.TIMESTAMP_TOO_OLD, "timestamp", f"{event.timestamp.isoformat()} is {before}")
    if event.customer_id is not None and LINK_SEPARATOR in event.customer_id:
        # A link is stored as "customer<US>event id" and read back up to the first US: such a customer id
        # would be read back cut short, as another customer's. Checked here, not as a pattern of every id in
        # the contract, which made validating an event 60% slower.
        return _reject(Reason.INVALID_VALUE, "customer_id", "must not contain U+001F (the separator of links)")
    return event


def decode_event(raw: bytes) -> AnyEvent | Rejection:
    """The contract's checks that do not depend on when they run (no size limit, no clock).

    Stages after the first door use this: an event accepted on arrival must not be refused later because
    the clock moved or a limit changed.
    """
    try:
        event: AnyEvent = EVENT_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        return Rejection((_problem(str(exc)),))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # Invalid UTF-8 inside a string surfaces as UnicodeDecodeError, absurd nesting as RecursionError.
        return _reject(Reason.MALFORMED_JSON, "", str(exc) or type(exc).__name__)
    if event.customer_id is None and event.anonymous_id is None:
        return _reject(Reason.MISSING_IDENTITY, "", "customer_id or anonymous_id is required")
    return event


def _reject(code: Reason, path: str, message: str) -> Rejection:
    return Rejection((Problem(code, path, message),))


def _problem(error: str) -> Problem:
    """Classify msgspec's first validation error into a reason code and a readable path."""
    parts = _AT_PATH.match(error)
    message = parts["message"] if parts else error
    path = (parts["path"] or "").removeprefix(".") if parts else ""
    leaf = path.rsplit(".", 1)[-1]
    named = _FIELD_NAMED.match(message)
    if named:
        path = f"{path}.{named['field']}" if path else named["field"]
        if path == "type":
            return Problem(Reason.MISSING_TYPE, path, message)
        code = Reason.MISSING_FIELD if message.startswith("Object missing") else Reason.UNKNOWN_FIELD
        return Problem(code, path, message)
    if not path and message.startswith("Expected `object`"):
        return Problem(Reason.NOT_AN_OBJECT, path, message)
    if path == "type":
        code = Reason.UNKNOWN_TYPE
    elif path == "action" and message.startswith("Invalid enum value"):
        code = Reason.UNKNOWN_ACTION
    elif path == "schema_version":
        code = Reason.UNSUPPORTED_SCHEMA_VERSION
    elif leaf in _TIMESTAMP_FIELDS:
        code = Reason.INVALID_TIMESTAMP
    elif _WRONG_TYPE.match(message):
        code = Reason.WRONG_TYPE
    else:
        code = Reason.INVALID_VALUE
    return Problem(code, path, message)
