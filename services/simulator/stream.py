"""The day-by-day driver: advance every person one day, then release that day's arrivals in order.

Rendered events get a ``received_at`` (collector latency or a late delay) and go into the day's buffer,
with any duplicate or malformed companion line. At the end of each day every line that has *arrived* by
the end of the day (buffered or pending from earlier days) is released, sorted by ``(arrival, sequence)``;
later arrivals wait in a heap. Memory is therefore one day of events plus the pending late ones, refunds
(emitted when the order is placed, dated up to 14 days later) and duplicates.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from schemas.events import CLICK_ACTIONS, EMAIL_ACTIONS, PURCHASE_ACTIONS
from services.simulator.behaviour import simulate_day
from services.simulator.clock import DAY_MS, UTC_Z, format_ts, to_ms
from services.simulator.customer import Customer
from services.simulator.faults import Faults
from services.simulator.population import Person, draw_person
from services.simulator.truth import truth_line
from services.simulator.world import World, campaign_schedule

_TYPE_OF_ACTION: Final[dict[str, str]] = {
    **dict.fromkeys(CLICK_ACTIONS, "click"),
    **dict.fromkeys(EMAIL_ACTIONS, "email"),
    **dict.fromkeys(PURCHASE_ACTIONS, "purchase"),
}

DEFAULT_START: Final = datetime(2025, 1, 1, tzinfo=UTC)
TRUTH_HORIZON_DAYS: Final = 90


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    customers: int
    days: int
    seed: int = 42
    start: datetime = DEFAULT_START
    duplicate_rate: float = 0.01
    late_rate: float = 0.02
    malformed_rate: float = 0.005
    truth_horizon_days: int = TRUTH_HORIZON_DAYS

    def __post_init__(self) -> None:
        if self.customers < 1 or self.days < 1:
            raise ValueError("customers and days must be at least 1")
        if self.truth_horizon_days < 0:
            raise ValueError("truth_horizon_days must not be negative")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("start must carry a UTC offset")


@dataclass(slots=True)
class SimulationStats:
    """What was emitted; final once :meth:`Simulation.lines` is exhausted."""

    customers: int = 0
    identified: int = 0  # people whose first identify was emitted
    events: int = 0  # distinct valid events
    lines: int = 0  # events + duplicates + malformed lines
    late: int = 0
    duplicates: int = 0
    by_action: dict[str, int] = field(default_factory=dict)  # the type for events without an action
    malformed: Counter[str] = field(default_factory=Counter)
    first_timestamp: str | None = None
    last_received_at: str | None = None

    def by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for action, n in self.by_action.items():
            kind = _TYPE_OF_ACTION.get(action, action)
            out[kind] = out.get(kind, 0) + n
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "identified": self.identified,
            "events": self.events,
            "lines": self.lines,
            "late": self.late,
            "duplicates": self.duplicates,
            "malformed": sum(self.malformed.values()),
            "malformed_by_reason": dict(sorted(self.malformed.items())),
            "by_type": dict(sorted(self.by_type().items())),
            "by_action": dict(sorted(self.by_action.items())),
            "last_received_at": self.last_received_at,
        }


class Emitter:
    """The sink behaviour renders into: stamps arrival, injects faults, buffers until the day's flush."""

    __slots__ = ("_buffer", "_faults", "_pending", "_seq", "stats")

    def __init__(self, faults: Faults, stats: SimulationStats) -> None:
        self._faults = faults
        self.stats = stats
        self._buffer: list[tuple[int, int, bytes]] = []
        self._pending: list[tuple[int, int, bytes]] = []
        self._seq = 0

    def emit(self, event: dict[str, Any], ts_ms: int) -> None:
        faults = self._faults
        stats = self.stats
        delay, late, duplicate_after, malformed = faults.draw()
        arrival = ts_ms + delay
        event["received_at"] = format_ts(arrival, UTC_Z)
        line = orjson.dumps(event)
        buf = self._buffer
        seq = self._seq
        buf.append((arrival, seq, line))
        self._seq = seq + 1
        stats.events += 1
        action = event.get("action") or event["type"]
        by_action = stats.by_action
        by_action[action] = by_action.get(action, 0) + 1
        if late:
            stats.late += 1
        if duplicate_after >= 0:
            buf.append((arrival + duplicate_after, seq + 1, line))
            self._seq = seq + 2
            stats.duplicates += 1
        elif malformed:
            reason = faults.malformed_reason(event)
            stats.malformed[reason.value] += 1
            serial = sum(stats.malformed.values())
            buf.append((arrival, seq + 1, faults.malform(event, reason, serial)))
            self._seq = seq + 2

    def release(self, until_ms: int | None) -> list[tuple[int, bytes]]:
        """Lines that arrived before ``until_ms`` (all when None), in arrival order, with their arrival (ms)."""
        pending = self._pending
        ready: list[tuple[int, int, bytes]] = []
        for item in self._buffer:
            if until_ms is None or item[0] < until_ms:
                ready.append(item)
            else:
                heapq.heappush(pending, item)
        self._buffer = []
        while pending and (until_ms is None or pending[0][0] < until_ms):
            ready.append(heapq.heappop(pending))
        ready.sort()
        if ready:
            self.stats.lines += len(ready)
            self.stats.last_received_at = format_ts(ready[-1][0], UTC_Z)
        return [(arrival, line) for arrival, _, line in ready]


class Simulation:
    """A seeded simulation; iterate :meth:`lines` once, then read :meth:`truth_lines` and :attr:`stats`."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        start_ms = to_ms(config.start)
        total = config.days + config.truth_horizon_days
        self.world = World(
            seed=config.seed,
            start_ms=start_ms,
            days=config.days,
            total_days=total,
            campaigns=campaign_schedule(config.seed, start_ms, total),
        )
        start_year = config.start.astimezone(UTC).year
        self.people: list[Person] = [
            draw_person(config.seed, i, config.days, start_year) for i in range(config.customers)
        ]
        self.customers: list[Customer] = [Customer.new(p, config.seed, total) for p in self.people]
        self.stats = SimulationStats(customers=config.customers)
        self._faults = Faults(
            config.seed,
            duplicate_rate=config.duplicate_rate,
            late_rate=config.late_rate,
            malformed_rate=config.malformed_rate,
        )
        self._started = False
        self._finished = False

    def lines(self) -> Iterator[bytes]:
        """Every line of the stream (JSON, no trailing newline) in arrival order; single use."""
        return (line for _, line in self.timed_lines())

    def timed_lines(self) -> Iterator[tuple[int, bytes]]:
        """``lines`` with each line's arrival time (epoch ms, its ``received_at``); single use."""
        if self._started:
            raise RuntimeError("a Simulation can be iterated only once")
        self._started = True
        world = self.world
        emitter = Emitter(self._faults, self.stats)
        customers = self.customers
        for day in range(world.total_days):
            sink = emitter if day < world.days else None
            for customer in customers:
                simulate_day(customer, day, world, sink)
            if day < world.days - 1:
                yield from emitter.release(world.start_ms + (day + 1) * DAY_MS)
            elif day == world.days - 1:
                yield from emitter.release(None)
        self.stats.identified = sum(1 for c in customers if c.truth.identified_ms is not None)
        self._finished = True

    def run(self) -> SimulationStats:
        """Generate without keeping the lines (the truth becomes available)."""
        for _ in self.lines():
            pass
        return self.stats

    def truth_lines(self) -> Iterator[bytes]:
        """One ground-truth JSON record per person (see :mod:`services.simulator.truth`)."""
        if not self._finished:
            raise RuntimeError("the ground truth is complete only after lines() is exhausted")
        cfg = self.config
        start_ms = self.world.start_ms
        for c in self.customers:
            yield truth_line(c.person, c.truth, start_ms=start_ms, days=cfg.days, horizon=cfg.truth_horizon_days)
