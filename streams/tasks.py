"""Running a batch's independent stages concurrently, as one unit of work."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
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
