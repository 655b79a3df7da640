"""``rapport deliver``: the webhook deliverer (services/webhooks/deliver.py) until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from services.settings import get_settings
from services.webhooks.deliver import run


def deliver() -> None:
    """POST segment changes to registered webhooks: signed, in order per customer, retried, dead-lettered."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(get_settings(), stop)

    asyncio.run(main())
