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

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.events import EVENT_ADAPTER, AnyEvent


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


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    max_event_bytes: int = 64 * 1024
    future_tolerance: timedelta = field(default_factory=lambda: timedelta(minutes=5))


_TIMESTAMP_ERRORS: Final = frozenset(
    {"timezone_aware", "datetime_parsing", "datetime_type", "datetime_from_date_parsing", "datetime_object_invalid"}
)
_WRONG_TYPE_ERRORS: Final = frozenset(
    {
        "string_type",
        "int_type",
        "int_from_float",
        "float_type",
        "bool_type",
        "list_type",
        "dict_type",
        "model_type",
        "model_attributes_type",
        "none_required",
    }
)


def validate_event(raw: bytes, *, now: datetime, limits: ValidationLimits) -> AnyEvent | Rejection:
    """Parse and validate one event; never raises on bad input."""
    if len(raw) > limits.max_event_bytes:
        return Rejection(
            (Problem(Reason.PAYLOAD_TOO_LARGE, "", f"{len(raw)} bytes exceeds the limit of {limits.max_event_bytes}"),)
        )
    try:
        event = EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        return Rejection(tuple(_problem(err) for err in exc.errors(include_url=False, include_input=False)))
    if event.timestamp - now > limits.future_tolerance:
        return Rejection(
            (
                Problem(
                    Reason.TIMESTAMP_IN_FUTURE,
                    "timestamp",
                    f"{event.timestamp.isoformat()} is more than {limits.future_tolerance} ahead of {now.isoformat()}",
                ),
            )
        )
    return event


def _problem(err: ErrorDetails) -> Problem:
    kind = err["type"]
    loc = err["loc"]
    # A tagged union prefixes each location with the matched tag ("click", ...); it is not part of the event.
    path = format_path(loc[1:] if loc and isinstance(loc[0], str) and kind != "union_tag_invalid" else loc)
    message = err["msg"]
    leaf = loc[-1] if loc else None
    if kind == "json_invalid":
        code = Reason.MALFORMED_JSON
    elif kind in {"model_attributes_type", "dict_type"} and len(loc) <= 1:
        code, path = Reason.NOT_AN_OBJECT, ""
    elif kind == "union_tag_not_found":
        code, path = Reason.MISSING_TYPE, "type"
    elif kind == "union_tag_invalid":
        code, path = Reason.UNKNOWN_TYPE, "type"
    elif kind == "missing_identity":
        code = Reason.MISSING_IDENTITY
    elif kind == "missing":
        code = Reason.MISSING_FIELD
    elif kind == "extra_forbidden":
        code = Reason.UNKNOWN_FIELD
    elif kind == "literal_error" and leaf == "action" and len(loc) == 2:
        code = Reason.UNKNOWN_ACTION
    elif kind == "literal_error" and leaf == "schema_version":
        code = Reason.UNSUPPORTED_SCHEMA_VERSION
    elif kind in _TIMESTAMP_ERRORS:
        code = Reason.INVALID_TIMESTAMP
    elif kind in _WRONG_TYPE_ERRORS:
        code = Reason.WRONG_TYPE
    else:
        code = Reason.INVALID_VALUE
    return Problem(code, path, message)


def format_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic location as a path a producer can read.

    >>> format_path(("items", 0, "quantity"))
    'items[0].quantity'
    >>> format_path(())
    ''
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
