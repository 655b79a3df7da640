"""streams.tasks: all_or_none (concurrent stages, the first error as is, no stage left running) and given_up."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from streams.handler import StalePosition
from streams.tasks import all_or_none, given_up


def test_stages_overlap() -> None:
    events: list[str] = []

    async def stage(name: str) -> None:
        events.append(f"{name} start")
        await asyncio.sleep(0.01)
        events.append(f"{name} end")

    asyncio.run(all_or_none([stage("a"), stage("b")]))
    assert events == ["a start", "b start", "a end", "b end"]


def test_a_failure_is_raised_unwrapped_and_cancels_the_other_stage() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def failing() -> None:
        await asyncio.sleep(0)
        raise StalePosition(set())

    async def main() -> None:
        with pytest.raises(StalePosition):
            await all_or_none([slow(), failing()])
        assert cancelled.is_set()

    asyncio.run(main())


def test_a_task_that_ends_on_its_own_is_not_given_up() -> None:
    async def run() -> tuple[bool, int]:
        task = asyncio.ensure_future(asyncio.sleep(0.03, result=7))
        return await given_up(task, lambda: False, 0.01), task.result()

    assert asyncio.run(run()) == (False, 7)


def test_a_task_given_up_is_cancelled_again_until_it_ends() -> None:
    """The task swallows its first two cancellations, as Python 3.11's asyncio.wait_for can (gh-86296)."""
    asks: list[int] = []

    async def stubborn() -> None:
        for _ in range(2):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)
        await asyncio.sleep(10)

    def give_up() -> bool:
        asks.append(1)
        return len(asks) >= 3

    async def run() -> tuple[bool, bool]:
        task = asyncio.ensure_future(stubborn())
        abandoned = await given_up(task, give_up, 0.01)
        return abandoned, task.cancelled()

    assert asyncio.run(run()) == (True, True)
    assert len(asks) == 3, "asked once per poll until it said so"


def test_the_callers_cancellation_cancels_the_task() -> None:
    async def run() -> bool:
        task = asyncio.ensure_future(asyncio.sleep(10))
        waiting = asyncio.ensure_future(given_up(task, lambda: False, 0.01))
        await asyncio.sleep(0.03)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0)
        return task.cancelled()

    assert asyncio.run(run())
