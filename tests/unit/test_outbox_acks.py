"""streams.outbox: a send waiting for Kafka's acks keeps calling ``waiting`` (a liveness beat), raises a
failed ack, and a cancelled wait cancels the acks' futures as awaiting them directly would."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer

import streams.outbox
from streams.outbox import Outbox


@pytest.fixture(autouse=True)
def fast_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams.outbox, "_BEAT_S", 0.01)
    monkeypatch.setattr(streams.outbox, "WAIT_WARNING_S", 0.05)


def outbox(beats: list[float]) -> Outbox:
    loop = asyncio.get_running_loop()
    return Outbox(cast(AIOKafkaProducer, None), waiting=lambda: beats.append(loop.time()))


def test_a_wait_for_late_acks_beats_until_they_come_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> list[float]:
        beats: list[float] = []
        acks: list[asyncio.Future[Any]] = [asyncio.get_running_loop().create_future() for _ in range(2)]
        asyncio.get_running_loop().call_later(0.005, acks[0].set_result, None)
        asyncio.get_running_loop().call_later(0.2, acks[1].set_result, None)
        await outbox(beats)._acknowledged(acks, 7)
        return beats

    with caplog.at_level(logging.INFO, logger="streams.outbox"):
        beats = asyncio.run(run())
    assert 5 <= len(beats) <= 25
    first = caplog.records[0].getMessage()
    assert first == "waiting 0 s for Kafka to acknowledge 7 records (consumption paused until it does)"
    assert caplog.records[-1].getMessage().startswith("Kafka acknowledged the 7 records after 0.2")


def test_acks_in_time_neither_beat_nor_log(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> list[float]:
        beats: list[float] = []
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        await outbox(beats)._acknowledged([ack], 1)
        return beats

    with caplog.at_level(logging.INFO, logger="streams.outbox"):
        assert asyncio.run(run()) == []
    assert not caplog.records


def test_a_failed_ack_is_raised() -> None:
    async def run() -> None:
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.03, ack.set_exception, ConnectionError("broker gone"))
        await outbox([])._acknowledged([ack], 1)

    with pytest.raises(ConnectionError, match="broker gone"):
        asyncio.run(run())


def test_a_cancelled_wait_cancels_the_acks() -> None:
    async def run() -> asyncio.Future[Any]:
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(outbox([])._acknowledged([ack], 1))
        await asyncio.sleep(0.03)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return ack

    assert asyncio.run(run()).cancelled()
