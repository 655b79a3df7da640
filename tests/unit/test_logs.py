"""services.logs: the Kafka clients' repeated lines held back, and what the next one says about them."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable

from services.logs import KAFKA_CLIENT_LOGGERS, RepeatsHeldBack


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args or None, None)


def test_an_outage_s_flood_becomes_one_line_a_minute_per_kind_through_a_real_logger() -> None:
    clock = Clock()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    handler.addFilter(RepeatsHeldBack(KAFKA_CLIENT_LOGGERS, every_s=60.0, clock=clock))
    logger = logging.getLogger("aiokafka.test_logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for tick in range(1_500):  # 150 s at ten lines a second, of two kinds
            clock.now = tick / 10
            logger.error("Unable connect to node with id %s: %s", 1, "Connection refused" if tick % 2 else "failed")
            logger.warning("Got error produce response: %s", "NodeNotReadyError")
        logging.getLogger("streams.test_logs").addHandler(handler)
        logging.getLogger("streams.test_logs").warning("ours %d", 1)
    finally:
        logger.removeHandler(handler)
        logging.getLogger("streams.test_logs").removeHandler(handler)
    connect = "aiokafka.test_logs ERROR Unable connect to node with id 1: failed"
    produce = "aiokafka.test_logs WARNING Got error produce response: NodeNotReadyError"
    held = " (599 more like it held back in the 60 s after the last shown)"
    assert out.getvalue().splitlines() == [
        connect,
        produce,
        connect + held,
        produce + held,
        connect + held,
        produce + held,
        "streams.test_logs WARNING ours 1",
    ]


def test_kinds_are_told_apart_by_logger_level_and_template_and_other_loggers_pass() -> None:
    held = RepeatsHeldBack(("aiokafka", "kafka"), clock=Clock())
    first = [
        record("aiokafka", "a %s", 1),
        record("aiokafka.conn", "a %s", 1),
        record("aiokafka", "a %s", 1, level=logging.WARNING),
        record("aiokafka", "b %s", 1),
        record("kafka.net", "a %s", 1),
    ]
    assert [held.filter(r) for r in first] == [True] * 5
    assert [held.filter(r) for r in first] == [False] * 5
    others = [record("aiokafkax", "a %s", 1), record("streams.outbox", "a %s", 1), record("faust", "a %s", 1)]
    assert [held.filter(r) for r in others * 2] == [True] * 6


def test_a_logger_that_formats_its_own_lines_does_not_grow_the_memory_without_bound() -> None:
    clock = Clock()
    held = RepeatsHeldBack(("aiokafka",), every_s=60.0, clock=clock)
    for n in range(5_000):
        clock.now = n / 10  # 500 s: most kinds expire
        assert held.filter(record("aiokafka", f"connection {n} refused"))
    assert len(held._kinds) <= 1024


def test_every_line_of_a_flood_that_stops_is_counted_within_a_minute_of_its_end() -> None:
    """The tail of an outage: no line of its kind comes after the last minute to say how many were held back,
    so its last one is shown at the minute's end. The reports run as the timer thread would, when due."""
    clock = Clock()
    due: list[tuple[float, Callable[[], None]]] = []
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))

    def schedule(delay_s: float, report: Callable[[], None]) -> None:
        due.append((clock.now + delay_s, report))

    def run_due() -> None:
        for entry in sorted(d for d in due if d[0] <= clock.now):
            due.remove(entry)
            entry[1]()

    handler.addFilter(RepeatsHeldBack(KAFKA_CLIENT_LOGGERS, clock=clock, report=handler.handle, schedule=schedule))
    logger = logging.getLogger("aiokafka.test_logs_tail")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for tick in range(1_455):  # 145.5 s at ten lines a second, then nothing
            clock.now = tick / 10
            run_due()
            logger.error("Unable connect to node with id %s", tick)
        ended = clock.now
        clock.now = ended + 60.0
        run_due()
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    counted = 0
    for line in lines:
        if more := re.search(r"\((\d+) more like it held back", line):
            counted += 1 + int(more[1])
        elif last := re.search(r"\(the last of (\d+) like it held back", line):
            counted += int(last[1])
        else:
            counted += 1
    assert counted == 1_455, lines
    assert len(lines) <= 4, lines  # the first line, then one a minute
    assert lines[-1].startswith("Unable connect to node with id 1454 (the last of"), lines
    assert not due


def test_a_report_whose_timer_wakes_early_waits_for_the_rest_of_its_minute() -> None:
    clock = Clock()
    due: list[tuple[float, Callable[[], None]]] = []
    shown: list[logging.LogRecord] = []
    held = RepeatsHeldBack(
        ("aiokafka",), clock=clock, report=shown.append, schedule=lambda s, report: due.append((s, report))
    )
    assert held.filter(record("aiokafka", "refused %s", 1))
    clock.now = 10.0
    assert not held.filter(record("aiokafka", "refused %s", 2))
    clock.now = 59.999  # the timer set for 60.0 wakes a millisecond early
    due.pop()[1]()
    assert not shown
    assert [round(delay_s, 6) for delay_s, _ in due] == [0.001]
    clock.now = 60.0
    due.pop()[1]()
    assert [r.getMessage() for r in shown] == [
        "refused 2 (the last of 1 like it held back in the 60 s after the last shown)"
    ]


def test_a_process_ending_within_its_minute_shows_what_it_held_back() -> None:
    """The timers are daemon threads, which do not run at exit: ``flush`` (an ``atexit`` hook of
    ``configure_logging``) shows each kind's last line held back with its count."""
    clock = Clock()
    shown: list[logging.LogRecord] = []
    held = RepeatsHeldBack(("aiokafka",), clock=clock, report=shown.append, schedule=lambda s, report: None)
    for n in range(5):
        clock.now = float(n)
        held.filter(record("aiokafka", "refused %s", n))
    held.filter(record("aiokafka.conn", "closed %s", 9))
    clock.now = 30.0
    held.flush()
    assert [r.getMessage() for r in shown] == [
        "refused 4 (the last of 4 like it held back in the 30 s after the last shown)"
    ]
    held.flush()
    assert len(shown) == 1
