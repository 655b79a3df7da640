"""Whether the API process was asked to stop, for the responses that would otherwise never end.

uvicorn's graceful shutdown waits for every open connection to close, and tells a streaming response
nothing: it only stops keeping connections alive. A segment-change subscriber (``GET /v1/segment-changes``)
therefore held the process until it was killed (SIGKILL at the end of Kubernetes' grace period), the stream
cut mid-chunk and its Kafka consumer never stopped. The command sets the flag from uvicorn's signal handler
(``services.cli.api``); each stream polls it and ends, and its client reconnects, to another replica, with
the ``Last-Event-ID`` it last saw.
"""

from __future__ import annotations


class Draining:
    """A flag, not an ``asyncio.Event``: it is set from a signal handler, where only a plain assignment is
    safe, and read by loops that already wake up at least once a second."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True
