"""Running a batch's independent stages concurrently, as one unit of work; giving up a task that runs too long."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

#: Cancellations of a task given up sent one turn of the loop apart, before they are ``poll_s`` apart.
_QUICK_CANCELS: Final = 100


async def all_or_none(stages: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run ``stages`` concurrently; if one fails, cancel the others, wait for them, and raise its error.

    Unlike ``asyncio.TaskGroup`` the error is raised as is, not wrapped in an ``ExceptionGroup``: the
    runtime tells failures apart by type (``StalePosition``). The batch is retried as a whole, and every
    stage is idempotent, so a stage cut short by cancellation is harmless.
    """
    tasks = [asyncio.ensure_future(stage) for stage in stages]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def given_up(task: asyncio.Future[Any], give_up: Callable[[], bool], poll_s: float) -> bool:
    """Wait for ``task``, asking ``give_up()`` every ``poll_s`` while it runs. False: it ended on its own (its
    result is the caller's to read). True: ``give_up()`` said so, and the task was cancelled, again until it
    ended: Python 3.11's ``asyncio.wait_for``, which redis-py awaits for every command it sends, can swallow a
    cancellation (gh-86296), and the task would go on. A cancellation of the caller cancels the task too.
    """
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=poll_s)
            if not task.done() and give_up():
                break
        else:
            return False
    except BaseException:
        task.cancel()
        raise
    cancels = 0
    while not task.done():
        task.cancel()
        # A task busy with fast round trips swallowed most cancellations (3 to 25 in a row, measured on a
        # namespace drop): the next ones follow at the next turns of the loop, when it has moved on to its
        # next await. Then every ``poll_s``, for a task whose clean-up takes time.
        await asyncio.wait({task}, timeout=0 if cancels < _QUICK_CANCELS else poll_s)
        cancels += 1
    return True
