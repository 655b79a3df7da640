"""Running a batch's independent stages concurrently, as one unit of work; giving up a task that runs too long."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any


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
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=poll_s)
    return True
