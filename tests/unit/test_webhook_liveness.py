"""The deliverer's liveness (``services.webhooks.deliver._Parts.beat``): the file is touched only while every
webhook's part goes round, so a part hung for longer than its batch budget and request timeout allow stops the
beats and the orchestrator restarts the process; a part that ended (its webhook paused) is let go."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from services.settings import Settings, WebhookSettings
from services.webhooks.deliver import _Parts
from streams.backoff import Backoff


class Beats:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def _parts(beats: Beats) -> _Parts:
    settings = Settings(_env_file=None, webhooks=WebhookSettings(batch_budget_s=1.0, timeout_s=1.0))
    shared: Any = SimpleNamespace(settings=settings)
    group: Any = None  # beat() starts no part
    return _Parts(shared, group=group, backoff=Backoff(0.1, 1.0), alive=beats)


def test_the_file_is_touched_only_while_every_part_goes_round() -> None:
    async def run() -> list[int]:
        beats = Beats()
        parts = _parts(beats)
        running = asyncio.create_task(asyncio.sleep(60))
        fresh: Any = SimpleNamespace(beat_at=time.monotonic())  # what beat() reads of a part
        hung: Any = SimpleNamespace(beat_at=time.monotonic())
        parts.running = {"wh_fresh": (fresh, running), "wh_hung": (hung, running)}
        counts = []
        parts.beat()
        counts.append(beats.count)
        hung.beat_at -= parts.stale_s + 1  # last went round longer ago than budget + timeout + 30 s
        parts.beat()
        counts.append(beats.count)
        hung.beat_at = time.monotonic()  # it goes round again
        parts.beat()
        counts.append(beats.count)
        running.cancel()
        return counts

    assert asyncio.run(run()) == [1, 1, 2]


def test_a_part_that_ended_is_let_go_and_does_not_count_as_hung() -> None:
    async def run() -> tuple[list[str], int]:
        beats = Beats()
        parts = _parts(beats)
        ended = asyncio.create_task(asyncio.sleep(0))
        await ended
        stale: Any = SimpleNamespace(beat_at=time.monotonic() - parts.stale_s - 1)
        parts.running = {"wh_paused": (stale, ended)}
        parts.beat()
        return list(parts.running), beats.count

    assert asyncio.run(run()) == ([], 1)
