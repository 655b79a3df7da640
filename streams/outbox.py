"""Sending a batch's output records to Kafka in per-partition record batches, and waiting for the acks.

``AIOKafkaProducer.send`` costs tens of microseconds per record (a future, the accumulator, and a
pure-Python murmur2 for the partition); the handler emits about one record per event, so that alone
would cap a worker far below its target. Here records are grouped per partition into aiokafka
``BatchBuilder``s and submitted with ``send_batch``; partitions are computed with Kafka's default
partitioner (murmur2 of the key, as every Kafka client does) and cached per key.

While the broker is down the acks do not come (an idempotent producer retries its batches for as long as it
takes), and the batch waits: that is backpressure, not a hang. The wait calls ``waiting`` every second, so
a liveness file keeps being touched (``streams.liveness``), and says once, at ``WAIT_WARNING_S``, what it is
waiting for: aiokafka's own log only says that the broker is unreachable.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

#: (topic, partition or None for the key's, key, value, headers)
Outgoing = tuple[str, int | None, bytes | None, bytes, list[tuple[str, bytes]] | None]

_CACHE_LIMIT = 200_000

log = logging.getLogger(__name__)

#: How often a wait for acks calls ``waiting``: the liveness file's own pace (``streams.liveness``).
_BEAT_S: Final = 1.0
#: A wait this long is logged: beyond any ack's round trip on a healthy cluster.
WAIT_WARNING_S: Final = 10.0


def _nothing() -> None:
    pass


def key_partition(key: bytes, count: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``count`` (murmur2, as every client)."""
    return int(murmur2(key) & 0x7FFFFFFF) % count


class Outbox:
    def __init__(self, producer: AIOKafkaProducer, waiting: Callable[[], None] = _nothing) -> None:
        """``waiting``: called every second while a send waits for its acks (a liveness beat)."""
        self.producer = producer
        self.waiting = waiting
        self._partition_counts: dict[str, int] = {}
        self._partition_of: dict[tuple[str, bytes], int] = {}
        self._round_robin = itertools.count()

    async def send(self, records: Sequence[Outgoing]) -> None:
        """Send every record; return once Kafka acknowledged them all (raises if any send failed)."""
        if not records:
            return
        builders: dict[tuple[str, int], Any] = {}
        pending: list[asyncio.Future[Any]] = []
        for topic, explicit, key, value, headers in records:
            partition = explicit if explicit is not None else await self.partition_for(topic, key)
            builder = builders.get((topic, partition))
            if builder is None:
                builder = builders[(topic, partition)] = self.producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=headers or []) is None:
                # The batch is full: submit it and start the next one for this partition.
                pending.append(await self._submit(builder, topic, partition))
                builder = builders[(topic, partition)] = self.producer.create_batch()
                builder.append(timestamp=None, key=key, value=value, headers=headers or [])
        for (topic, partition), builder in builders.items():
            pending.append(await self._submit(builder, topic, partition))
        await self._acknowledged(pending, len(records))

    async def _acknowledged(self, pending: list[asyncio.Future[Any]], count: int) -> None:
        acks = asyncio.gather(*pending)
        started = time.monotonic()
        warned = False
        try:
            while not (await asyncio.wait({acks}, timeout=_BEAT_S))[0]:
                self.waiting()
                waited = time.monotonic() - started
                if not warned and waited >= WAIT_WARNING_S:
                    warned = True
                    log.warning(
                        "waiting %.0f s for Kafka to acknowledge %d records (consumption paused until it does)",
                        waited, count,
                    )  # fmt: skip
        except BaseException:
            acks.cancel()  # as awaiting the gather itself would: a cancelled batch is retried whole
            raise
        if warned:
            log.info("Kafka acknowledged the %d records after %.1f s", count, time.monotonic() - started)
        acks.result()

    async def _submit(self, builder: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        # A closed batch is sent at once; an open one would wait out the producer's linger_ms (measured:
        # 5 ms added to every stage's acknowledgement), which only helps batches still being filled.
        builder.close()
        acked: asyncio.Future[Any] = await self.producer.send_batch(builder, topic, partition=partition)
        return acked

    async def partition_count(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._partition_counts[topic] = len(await self.producer.partitions_for(topic))
        return count

    async def partition_for(self, topic: str, key: bytes | None) -> int:
        """The partition Kafka's default partitioner gives ``key`` (round robin for no key)."""
        count = await self.partition_count(topic)
        if key is None:
            return next(self._round_robin) % count
        cached = self._partition_of.get((topic, key))
        if cached is None:
            if len(self._partition_of) >= _CACHE_LIMIT:
                self._partition_of.clear()
            cached = self._partition_of[(topic, key)] = key_partition(key, count)
        return cached
