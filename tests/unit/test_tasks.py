"""streams.tasks.all_or_none: concurrent stages, the first error as is, no stage left running."""

from __future__ import annotations

import asyncio

import pytest

from streams.handler import StalePosition
from streams.tasks import all_or_none


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
