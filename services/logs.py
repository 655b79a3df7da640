"""How every long-running process logs: one format on stderr, and the Kafka clients' repeats held back.

While a broker is unreachable, aiokafka logs each failed connection, metadata request, fetch and produce
attempt: about 150 lines a second from one worker (measured during a 25 s outage: 3,800 lines, of six
kinds). At that pace a ten-minute outage would bury everything else under some 90,000 of them, the
worker's own word on what it waits for included. ``RepeatsHeldBack`` lets the first line of each kind
through and holds back the same kind for a minute; the next one after that says how many were held back.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

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


class RepeatsHeldBack(logging.Filter):
    """At most one line a ``every_s`` per kind (logger, level, message template) from the ``loggers`` and
    their children; the first let through after others were held back says how many.

    >>> clock = iter([0.0, 1.0, 2.0, 61.0]).__next__
    >>> held = RepeatsHeldBack(("aiokafka",), every_s=60.0, clock=clock)
    >>> def line(text: str) -> logging.LogRecord:
    ...     return logging.LogRecord("aiokafka.conn", logging.ERROR, "", 0, "Unable connect to %s", (text,), None)
    >>> [held.filter(r) for r in map(line, ["a", "b", "c"])]
    [True, False, False]
    >>> last = line("d"); held.filter(last), last.getMessage()
    (True, 'Unable connect to d (2 more like it held back in the 60 s after the last shown)')
    >>> held.filter(logging.LogRecord("streams", logging.ERROR, "", 0, "ours", None, None))
    True
    """

    def __init__(
        self, loggers: Sequence[str], every_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.loggers = tuple(loggers)
        self.every_s = every_s
        self.clock = clock
        # Filters run outside the handler's lock, and Faust's consumer thread logs as well.
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, int, str], _Kind] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(record.name == n or record.name.startswith(n + ".") for n in self.loggers):
            return True
        kind = (record.name, record.levelno, str(record.msg))
        with self._lock:
            now = self.clock()
            seen = self._kinds.get(kind)
            if seen is not None and now - seen.let_through_at < self.every_s:
                seen.held += 1
                return False
            if len(self._kinds) >= _KINDS_MAX:
                self._kinds = {k: v for k, v in self._kinds.items() if now - v.let_through_at < self.every_s}
            self._kinds[kind] = _Kind(now)
        if seen is not None and seen.held:
            try:
                message = record.getMessage()
            except Exception:  # a library's malformed line: the handler reports it, not its caller
                return True
            record.msg = (
                f"{message} ({seen.held} more like it held back in the {self.every_s:.0f} s after the last shown)"
            )
            record.args = None
        return True


def configure_logging(level: str | int, quiet: Sequence[str] = ()) -> None:
    """Log at ``level`` on stderr, the Kafka clients' repeats held back; the ``quiet`` loggers (a framework's
    narration of its own steps) at WARNING at least."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RepeatsHeldBack(KAFKA_CLIENT_LOGGERS))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in quiet:
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
