"""How every long-running process logs: one format on stderr, and the Kafka clients' repeats held back.

While a broker is unreachable, aiokafka logs each failed connection, metadata request, fetch and produce
attempt: about 150 lines a second from one worker (measured during a 25 s outage: 3,800 lines, of six
kinds). At that pace a ten-minute outage would bury everything else under some 90,000 of them, the
worker's own word on what it waits for included. ``RepeatsHeldBack`` lets the first line of each kind
through and holds back the same kind for a minute; the next one after that says how many were held back.
When no line of that kind comes after the minute (the outage ended), the last one held back is shown at
its end, saying how many it stands for: every line held back is counted within a minute.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

#: Calls ``action`` once, ``delay_s`` from now, on another thread.
Schedule = Callable[[float, Callable[[], None]], None]

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"

#: The Kafka clients (aiokafka, and kafka-python for the admin and lookup clients).
KAFKA_CLIENT_LOGGERS: Final = ("aiokafka", "kafka")

#: Kinds of line remembered at most; past it the expired ones are forgotten (a logger formatting its
#: message itself makes every line a kind of its own).
_KINDS_MAX: Final = 1024


@dataclass(slots=True)
class _Kind:
    let_through_at: float
    held: int = 0
    last: logging.LogRecord | None = None  # the last line held back since ``let_through_at``


#: Set on the line that reports a minute's lines held back: it passes the filter.
_REPORT: Final = "rapport_held_back_report"


def _later(delay_s: float, action: Callable[[], None]) -> None:
    timer = threading.Timer(delay_s, action)
    timer.daemon = True  # a count still due when the process exits is not worth waiting for
    timer.start()


class RepeatsHeldBack(logging.Filter):
    """At most one line a ``every_s`` per kind (logger, level, message template) from the ``loggers`` and
    their children; the first let through after others were held back says how many. A kind none of
    whose lines comes after its ``every_s`` has its last line held back shown then, through ``report``
    (the handler's ``handle``), saying how many it stands for; ``schedule`` runs that report.

    >>> now, due, shown = [0.0], [], []
    >>> held = RepeatsHeldBack(("aiokafka",), every_s=60.0, clock=lambda: now[0], report=shown.append,
    ...     schedule=lambda delay_s, report: due.append((delay_s, report)))
    >>> def line(text: str) -> logging.LogRecord:
    ...     return logging.LogRecord("aiokafka.conn", logging.ERROR, "", 0, "Unable connect to %s", (text,), None)
    >>> [held.filter(line(text)) for text in "abc"]
    [True, False, False]
    >>> now[0] = 61.0; last = line("d"); held.filter(last), last.getMessage()
    (True, 'Unable connect to d (2 more like it held back in the 60 s after the last shown)')
    >>> now[0] = 62.0; [held.filter(line(text)) for text in "ef"]  # then the outage ends
    [False, False]
    >>> [delay_s for delay_s, _ in due]
    [60.0, 59.0]
    >>> now[0] = 121.0; due[-1][1](); shown[0].getMessage()
    'Unable connect to f (the last of 2 like it held back in the 60 s after the last shown)'
    >>> held.filter(logging.LogRecord("streams", logging.ERROR, "", 0, "ours", None, None))
    True
    """

    def __init__(
        self,
        loggers: Sequence[str],
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        report: Callable[[logging.LogRecord], object] | None = None,
        schedule: Schedule = _later,
    ) -> None:
        super().__init__()
        self.loggers = tuple(loggers)
        self.every_s = every_s
        self.clock = clock
        self.report = report
        self.schedule = schedule
        # Filters run outside the handler's lock, and Faust's consumer thread logs as well.
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, int, str], _Kind] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _REPORT, False) or not any(
            record.name == n or record.name.startswith(n + ".") for n in self.loggers
        ):
            return True
        kind = (record.name, record.levelno, str(record.msg))
        with self._lock:
            now = self.clock()
            seen = self._kinds.get(kind)
            if seen is not None and now - seen.let_through_at < self.every_s:
                seen.held += 1
                seen.last = record
                if seen.held == 1 and self.report is not None:
                    self.schedule(seen.let_through_at + self.every_s - now, lambda: self._report_tail(kind))
                return False
            if len(self._kinds) >= _KINDS_MAX:
                # Those with lines held back wait for their report.
                self._kinds = {k: v for k, v in self._kinds.items() if now - v.let_through_at < self.every_s or v.held}
            self._kinds[kind] = _Kind(now)
            held = 0 if seen is None else seen.held
        if held:
            _append(record, f"{held} more like it held back in the {self.every_s:.0f} s after the last shown")
        return True

    def _report_tail(self, kind: tuple[str, int, str]) -> None:
        """Show the last line held back of ``kind`` if none came after its minute to say how many were."""
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is None or seen.last is None or not seen.held:
                return  # a later line said it
            now = self.clock()
            early_s = seen.let_through_at + self.every_s - now  # a timer may wake a hair early
            if early_s <= 0:
                last, held = seen.last, seen.held
                # Shown now: lines of this kind from here on are held back a minute, then reported likewise.
                self._kinds[kind] = _Kind(now)
        if early_s > 0:
            self.schedule(early_s, lambda: self._report_tail(kind))
            return
        self._show(last, held, self.every_s)

    def flush(self) -> None:
        """Show now the last line held back of every kind that has some: the process is ending, and its
        timers (daemon threads) will not run."""
        with self._lock:
            now = self.clock()
            tails = [(seen.last, seen.held, now - seen.let_through_at) for seen in self._kinds.values() if seen.held]
            self._kinds.clear()
        for last, held, span_s in tails:
            if last is not None:
                self._show(last, held, span_s)

    def _show(self, last: logging.LogRecord, held: int, span_s: float) -> None:
        tail = logging.makeLogRecord(last.__dict__)
        _append(tail, f"the last of {held} like it held back in the {span_s:.0f} s after the last shown")
        setattr(tail, _REPORT, True)
        if self.report is not None:
            self.report(tail)


def _append(record: logging.LogRecord, note: str) -> None:
    """``note`` in brackets after ``record``'s message (a library's malformed line is left as it is: the
    handler reports it, not its caller)."""
    try:
        message = record.getMessage()
    except Exception:
        return
    record.msg, record.args = f"{message} ({note})", None


def configure_logging(level: str | int, quiet: Sequence[str] = ()) -> None:
    """Log at ``level`` on stderr, the Kafka clients' repeats held back; the ``quiet`` loggers (a framework's
    narration of its own steps) at WARNING at least."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    held = RepeatsHeldBack(KAFKA_CLIENT_LOGGERS, report=handler.handle)
    handler.addFilter(held)
    # Registered after logging's own shutdown hook, so run before it: the handler still writes.
    atexit.register(held.flush)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in quiet:
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
