"""``rapport api``: the serving API on uvicorn (uvloop, httptools)."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from services.api.app import create_app
from services.gc_tuning import tune_gc
from services.settings import get_settings


def api(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default: api.host).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default: api.port).")] = None,
) -> None:
    """Serve profiles and collect events over HTTP until SIGTERM/SIGINT."""
    settings = get_settings()
    app = create_app(settings)
    tune_gc(settings.api.gc_young_threshold)  # after the imports: they are frozen out of every collection
    uvicorn.run(
        app,
        host=host or settings.api.host,
        port=port or settings.api.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.api.log_level.lower(),
        # Access logs would carry profile ids (paths): PII stays out of logs.
        access_log=False,
    )
