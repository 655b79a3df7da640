"""Transport effects and faults: collector latency, late arrival, duplicates and malformed lines.

All draws here come from one dedicated generator, separate from the customers' ones, so the set of valid
events (and their event times) does not depend on the fault rates; only arrival times and the extra lines do.

* **Latency**: ``received_at = timestamp + latency``, lognormal around 150 ms, at most ~10 s.
* **Late** (``late_rate``): ``received_at = timestamp + 1 h + Exp(mean 8 h)``, capped at 3 days.
* **Duplicates** (``duplicate_rate``): the byte-identical line is delivered again 0.2 s to 10 min after the
  original arrived (so a duplicate's ``received_at`` is its original's, earlier than its position).
* **Malformed** (``malformed_rate``): an *additional* line made from a copy of the event with a fresh id
  ``bad-<seed>-<n>-<reason>`` and one defect of the named :class:`~schemas.validation.Reason`. The valid
  stream is unaffected, so the ground truth stays exact.

A line gets at most one companion (a duplicate or a malformed variant), drawn with one uniform number.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Final

import orjson

from schemas.validation import Reason
from services.simulator.clock import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from services.simulator.sampling import lognormal_durations, seeded_rng

#: Relative frequency of each defect among malformed lines (huge payloads are kept rare: they are 70 KB).
MALFORMED_WEIGHTS: Final[dict[Reason, float]] = {
    Reason.MALFORMED_JSON: 1.0,
    Reason.NOT_AN_OBJECT: 0.5,
    Reason.MISSING_TYPE: 1.0,
    Reason.UNKNOWN_TYPE: 1.0,
    Reason.UNKNOWN_ACTION: 1.0,
    Reason.MISSING_FIELD: 1.0,
    Reason.UNKNOWN_FIELD: 1.0,
    Reason.MISSING_IDENTITY: 1.0,
    Reason.WRONG_TYPE: 1.0,
    Reason.INVALID_VALUE: 1.0,
    Reason.INVALID_TIMESTAMP: 1.0,
    Reason.TIMESTAMP_IN_FUTURE: 1.0,
    Reason.UNSUPPORTED_SCHEMA_VERSION: 1.0,
    Reason.PAYLOAD_TOO_LARGE: 0.25,
}
MALFORMED_PREFIX: Final = "bad-"
OVERSIZE_BYTES: Final = 70_000
FUTURE_YEARS: Final = 8  # a multiple of 4 keeps 29 February valid

_TABLE_SIZE: Final = 1024
_LATENCY_QUANTILES: Final = lognormal_durations(150, 0.9, floor_ms=5, cap_ms=10 * SECOND_MS, size=_TABLE_SIZE)
_LATENCY: Final = (*_LATENCY_QUANTILES, _LATENCY_QUANTILES[-1])  # a spare entry guards float rounding near 1

Mutator = Callable[[dict[str, Any], random.Random], None]

_REQUIRED: Final[dict[str, str]] = {
    "click": "session_id",
    "email": "message_id",
    "purchase": "currency",
    "social_mention": "platform",
    "identify": "customer_id",
}


def _drop_type(bad: dict[str, Any], rng: random.Random) -> None:
    del bad["type"]


def _unknown_type(bad: dict[str, Any], rng: random.Random) -> None:
    bad["type"] = "page_view" if bad["type"] == "click" else f"{bad['type']}_v2"


def _unknown_action(bad: dict[str, Any], rng: random.Random) -> None:
    bad["action"] = {"click": "hover", "email": "forwarded", "purchase": "exchange"}[bad["type"]]


def _missing_field(bad: dict[str, Any], rng: random.Random) -> None:
    del bad[_REQUIRED[bad["type"]]]


def _unknown_field(bad: dict[str, Any], rng: random.Random) -> None:
    bad["custmer_id"] = bad.get("customer_id") or bad.get("anonymous_id")


def _missing_identity(bad: dict[str, Any], rng: random.Random) -> None:
    bad.pop("customer_id", None)
    bad.pop("anonymous_id", None)


def _wrong_type(bad: dict[str, Any], rng: random.Random) -> None:
    kind = bad["type"]
    if kind == "click":
        bad["session_id"] = 1000 + len(bad["session_id"])
    elif kind == "email":
        bad["message_id"] = 42
    elif kind == "purchase":
        bad["total"] = f"{bad['total']:.2f}"
    elif kind == "social_mention":
        bad["followers"] = "1.2k"
    else:
        bad["traits"] = {**bad["traits"], "birth_year": "1984"}


def _invalid_value(bad: dict[str, Any], rng: random.Random) -> None:
    kind = bad["type"]
    if kind == "click":
        bad["url"] = ""
    elif kind == "email":
        bad["campaign_id"] = ""
    elif kind == "purchase":
        bad["currency"] = "euro"
    elif kind == "social_mention":
        bad["followers"] = -5
    else:
        bad["traits"] = {**bad["traits"], "country": "Germany"}


def _invalid_timestamp(bad: dict[str, Any], rng: random.Random) -> None:
    ts: str = bad["timestamp"]
    # without its offset, or in a local notation
    bad["timestamp"] = ts[:23] if rng.random() < 0.7 else f"{ts[8:10]}/{ts[5:7]}/{ts[:4]} {ts[11:16]}"


def _future_timestamp(bad: dict[str, Any], rng: random.Random) -> None:
    ts: str = bad["timestamp"]
    bad["timestamp"] = f"{int(ts[:4]) + FUTURE_YEARS}{ts[4:]}"


def _schema_version(bad: dict[str, Any], rng: random.Random) -> None:
    bad["schema_version"] = 2


def _oversize(bad: dict[str, Any], rng: random.Random) -> None:
    bad["properties"] = {"debug_dump": "x" * OVERSIZE_BYTES}


#: Defects made by editing the event before it is serialised.
_MUTATORS: Final[dict[Reason, Mutator]] = {
    Reason.MISSING_TYPE: _drop_type,
    Reason.UNKNOWN_TYPE: _unknown_type,
    Reason.UNKNOWN_ACTION: _unknown_action,
    Reason.MISSING_FIELD: _missing_field,
    Reason.UNKNOWN_FIELD: _unknown_field,
    Reason.MISSING_IDENTITY: _missing_identity,
    Reason.WRONG_TYPE: _wrong_type,
    Reason.INVALID_VALUE: _invalid_value,
    Reason.INVALID_TIMESTAMP: _invalid_timestamp,
    Reason.TIMESTAMP_IN_FUTURE: _future_timestamp,
    Reason.UNSUPPORTED_SCHEMA_VERSION: _schema_version,
    Reason.PAYLOAD_TOO_LARGE: _oversize,
}


def applicable_reasons(event: dict[str, Any]) -> list[Reason]:
    """The defects that can be made from ``event`` (identify events have no action and need a customer id)."""
    return [
        r
        for r in MALFORMED_WEIGHTS
        if (r is not Reason.UNKNOWN_ACTION or "action" in event)
        and (r is not Reason.MISSING_IDENTITY or event["type"] != "identify")
    ]


class Faults:
    """Draws transport times and faults from its own generator."""

    __slots__ = ("_dup_or_malformed", "_latency_scale", "_rng", "duplicate_rate", "late_rate", "malformed_rate", "seed")

    def __init__(self, seed: int, *, duplicate_rate: float, late_rate: float, malformed_rate: float) -> None:
        for name, rate in (("duplicate", duplicate_rate), ("late", late_rate), ("malformed", malformed_rate)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"the {name} rate must be within [0, 1), got {rate}")
        if duplicate_rate + malformed_rate >= 1.0:
            raise ValueError("the duplicate and malformed rates must add up to less than 1")
        self._rng = seeded_rng(seed, "faults")
        self.seed = seed
        self.duplicate_rate = duplicate_rate
        self.late_rate = late_rate
        self.malformed_rate = malformed_rate
        self._latency_scale = _TABLE_SIZE / (1.0 - late_rate)
        self._dup_or_malformed = duplicate_rate + malformed_rate

    def draw(self) -> tuple[int, bool, int, bool]:
        """One event's transport: (ms from event time to receipt, late?, duplicate delay or -1, malformed?).

        A line gets at most one companion: a duplicate or a malformed variant.
        """
        rng = self._rng
        u = rng.random()
        if u < self.late_rate:
            delay, late = min(3 * DAY_MS, HOUR_MS + int(rng.expovariate(1.0 / (8 * HOUR_MS)))), True
        else:
            delay, late = _LATENCY[int((u - self.late_rate) * self._latency_scale)], False
        v = rng.random()
        if v >= self._dup_or_malformed:
            return delay, late, -1, False
        if v < self.duplicate_rate:
            return delay, late, min(10 * MINUTE_MS, 200 + int(rng.expovariate(1.0 / (30 * SECOND_MS)))), False
        return delay, late, -1, True

    def malformed_reason(self, event: dict[str, Any]) -> Reason:
        """The defect to inject next to ``event`` (one that applies to its type)."""
        reasons = applicable_reasons(event)
        return self._rng.choices(reasons, weights=[MALFORMED_WEIGHTS[r] for r in reasons])[0]

    def malform(self, event: dict[str, Any], reason: Reason, serial: int) -> bytes:
        """One line derived from ``event`` that the validator rejects with ``reason``."""
        bad = dict(event)
        bad["event_id"] = malformed_id(self.seed, serial, reason)
        if reason is Reason.MALFORMED_JSON:
            text = orjson.dumps(bad)
            return text[: self._rng.randrange(len(text) // 2, len(text) - 1)]
        if reason is Reason.NOT_AN_OBJECT:
            return orjson.dumps([bad])
        _MUTATORS[reason](bad, self._rng)
        return orjson.dumps(bad)


def malformed_id(seed: int, serial: int, reason: Reason) -> str:
    """The recognisable id of a malformed line: ``bad-<seed>-<serial>-<reason>``."""
    return f"{MALFORMED_PREFIX}{seed}-{serial}-{reason.value}"
