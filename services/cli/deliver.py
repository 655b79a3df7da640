"""``rapport deliver``: the webhook deliverer (services/webhooks/deliver.py) until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

import typer

from profiles.namespaces import NamespaceStateError
from services.cli.signals import on_stop_signals
from services.gc_tuning import tune_gc
from services.logs import configure_logging
from services.settings import get_settings
from services.webhooks.deliver import run


def deliver() -> None:
    """POST segment changes to registered webhooks: signed, in order per customer, retried, dead-lettered."""
    settings = get_settings()
    configure_logging(settings.stream.log_level)
    tune_gc(settings.webhooks.gc_young_threshold)

    async def main() -> None:
        stop = asyncio.Event()
        on_stop_signals(asyncio.get_running_loop(), lambda _: stop.set())
        await run(settings, stop)

    try:
        asyncio.run(main())
    except NamespaceStateError as exc:  # its namespace is being dropped
        typer.echo(f"rapport: {exc}", err=True)
        raise typer.Exit(1) from None
