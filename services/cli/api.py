"""``rapport api``: the serving API on uvicorn (uvloop, httptools)."""

from __future__ import annotations

import contextlib
import sys
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from uvicorn.config import STARTUP_FAILURE

from services.api.app import create_app
from services.api.draining import Draining
from services.gc_tuning import tune_gc
from services.logs import configure_logging
from services.settings import get_settings


class _Server(uvicorn.Server):
    """uvicorn's server, which also tells the responses that never end on their own to end
    (``services.api.draining``) when a signal stops it."""

    def __init__(self, config: uvicorn.Config, draining: Draining) -> None:
        super().__init__(config)
        self.draining = draining

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.draining.request()
        super().handle_exit(sig, frame)


def api(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default: api.host).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default: api.port).")] = None,
) -> None:
    """Serve profiles and collect events over HTTP until SIGTERM/SIGINT."""
    settings = get_settings()
    # uvicorn configures its own loggers only: this is where the Kafka clients' and the API's own lines go.
    configure_logging(settings.api.log_level)
    draining = Draining()
    app = create_app(settings, draining)
    tune_gc(settings.api.gc_young_threshold)  # after the imports: they are frozen out of every collection
    config = uvicorn.Config(
        app,
        host=host or settings.api.host,
        port=port or settings.api.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.api.log_level.lower(),
        # Access logs would carry profile ids (paths): PII stays out of logs.
        access_log=False,
        # A request still running this long after a stop is cancelled: the process ends before Kubernetes'
        # grace period (deploy/k8s/api.yaml) runs out and kills it.
        timeout_graceful_shutdown=settings.api.graceful_shutdown_s,
    )
    server = _Server(config, draining)
    # uvicorn raises the SIGINT it handled again once it has shut down, as uvicorn.run expects.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # as uvicorn.run: a port in use, a lifespan that failed
