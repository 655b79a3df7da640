"""How a command stops on Ctrl-C or SIGTERM.

``asyncio.run`` turns Ctrl-C into a cancellation of the command's task, once. Python 3.11's
``asyncio.wait_for``, which redis-py awaits for every command it sends, returns normally when that
cancellation meets a reply that has just arrived (gh-86296, fixed in 3.12), and the command went on to its
end: measured on `rapport namespace drop` of 2,000,000 keys, one Ctrl-C in five. The one-shot commands are
cancelled again until they end (``run_stoppable``). A replay honours the request between two slices
(``Stopping``) instead, so that it stops at a chunk's boundary rather than inside aiokafka's fetch or its
chunk's transaction; the long-running processes (worker, trainer, deliverer) stop their loops on it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

import typer

from streams.tasks import given_up

T = TypeVar("T")

_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
#: How soon a signal is acted on.
_POLL_S: Final = 0.1


def on_stop_signals(loop: asyncio.AbstractEventLoop, callback: Callable[[signal.Signals], None]) -> None:
    """``callback(signal)`` on SIGINT and SIGTERM. A shell starting a background job without job control has it
    ignore SIGINT: that is left ignored."""
    for sig in _SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            loop.add_signal_handler(sig, callback, sig)


class Stopping:
    """Ctrl-C or SIGTERM, as a request the replay honours between two slices (``Replay(stop=…)``) and while it
    waits out an outage: cancelling its task was not reliable (``streams.replay.ReplayInterruptedError``)."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.signal = signal.SIGINT

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        on_stop_signals(loop, self._request)

    def _request(self, sig: signal.Signals) -> None:
        self.signal = sig
        self.requested.set()


class _InterruptedError(Exception):
    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(sig.name)
        self.signal = sig


def run_stoppable(main: Coroutine[Any, Any, T], interrupted: str = "interrupted") -> T:
    """``asyncio.run(main)``, cancelled on Ctrl-C or SIGTERM, again until it ends; then ``rapport: {interrupted}``
    on stderr and exit status 128 + the signal, as a shell reports a command it stopped."""
    received: list[signal.Signals] = []

    async def run() -> T:
        on_stop_signals(asyncio.get_running_loop(), received.append)
        task = asyncio.ensure_future(main)
        stopped = await given_up(task, lambda: bool(received), _POLL_S)
        if not stopped or (not task.cancelled() and task.exception() is None):
            return task.result()  # a command that had finished when the signal came reports what it did
        raise _InterruptedError(received[0])  # not what its clean-up raised once cancelled

    try:
        return asyncio.run(run())
    except _InterruptedError as stopped:
        typer.echo(f"rapport: {interrupted}", err=True)
        raise typer.Exit(128 + stopped.signal) from None
