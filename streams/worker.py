"""Run a batch app as a worker process: uvloop, logs on stderr, clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NoReturn

import faust
import uvloop

from services.gc_tuning import tune_gc
from services.logs import configure_logging
from services.settings import Settings
from streams.app import make_app
from streams.handler import HandlerFactory

# At INFO these narrate every service start and stop (dozens of lines per rebalance); their warnings and
# errors still show. Our own loggers and aiokafka's group membership messages stay at the chosen level.
CHATTY_LOGGERS = ("faust", "mode")


def run_worker(settings: Settings, handler_factory: HandlerFactory, topics: Sequence[str], group_id: str) -> NoReturn:
    """Consume ``topics`` in group ``group_id`` until SIGTERM/SIGINT, then commit what was applied and exit."""
    configure_logging(settings.stream.log_level, quiet=CHATTY_LOGGERS)
    tune_gc(settings.stream.gc_young_threshold)
    # This loop only: uvloop for the aiokafka consumer thread's own loop too measured no different.
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app = make_app(settings, handler_factory=handler_factory, topics=topics, group_id=group_id)
    # override_logging=False: mode would replace the handlers above with its own (on stdout, colourised).
    worker = faust.Worker(app, loop=loop, quiet=True, override_logging=False, redirect_stdouts=False)
    worker.spinner = None  # a terminal progress spinner; it writes escape codes even when quiet
    worker.execute_from_commandline()
