"""A stream worker that counts records per key in Redis: the oracle-friendly handler of the runtime's tests.

``python -m tests.streams_support.counting_worker`` consumes the ``events.clicks`` topic of the configured
prefix. Configuration: the usual ``RAPPORT_*`` settings (``RAPPORT_KAFKA__TOPIC_PREFIX``,
``RAPPORT_REDIS__URL``, ``RAPPORT_STREAM__*``), plus ``COUNTING_GROUP`` (consumer group) and
``COUNTING_KEY_PREFIX`` (Redis keys).

Per batch, one Lua script checks every partition's fencing epoch and checkpoint and then, only if all
match, adds the counts and moves the checkpoints, so counts and positions never disagree.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from faust.types import TP
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from schemas.topics import CLICKS, full_name
from services.settings import Settings
from streams.handler import Batch, BatchHandler, HandlerFactory, StalePosition
from streams.worker import run_worker

# KEYS: counts, checkpoints, epochs (hashes; one hash tag, so one Redis Cluster slot).
# ARGV: n, then n x (field, epoch, start, end), then (key, increment) pairs.
APPLY_BATCH = """
local n = tonumber(ARGV[1])
local stale = {}
for i = 0, n - 1 do
  local at = 2 + i * 4
  local field = ARGV[at]
  if tonumber(redis.call('HGET', KEYS[3], field) or '0') > tonumber(ARGV[at + 1]) then
    return {'FENCED', field}
  end
  local checkpoint = redis.call('HGET', KEYS[2], field)
  if checkpoint and tonumber(checkpoint) ~= tonumber(ARGV[at + 2]) then
    stale[#stale + 1] = field
  end
end
if #stale > 0 then
  return {'STALE', unpack(stale)}
end
for i = 0, n - 1 do
  local at = 2 + i * 4
  redis.call('HSET', KEYS[2], ARGV[at], ARGV[at + 3])
  -- Restores the epoch if Redis lost it; a higher one was refused above.
  redis.call('HSET', KEYS[3], ARGV[at], ARGV[at + 1])
end
for j = 2 + n * 4, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[j], ARGV[j + 1])
end
return {'OK'}
"""


class Fenced(Exception):
    """Another worker took the partition over (a higher epoch): this one's write was refused."""


@dataclass(frozen=True)
class CountingKeys:
    """Where the counts live; tests read them back with these names."""

    prefix: str

    @property
    def counts(self) -> str:
        return f"{{{self.prefix}}}:counts"

    @property
    def checkpoints(self) -> str:
        return f"{{{self.prefix}}}:checkpoints"

    @property
    def epochs(self) -> str:
        return f"{{{self.prefix}}}:epochs"

    @property
    def ticks(self) -> str:
        return f"{{{self.prefix}}}:ticks"

    def all(self) -> list[str]:
        return [self.counts, self.checkpoints, self.epochs, self.ticks]


def field(tp: TP) -> str:
    return f"{tp.topic}:{tp.partition}"


class CountingHandler:
    def __init__(self, client: redis.Redis, keys: CountingKeys) -> None:
        self.client = client
        self.keys = keys
        self.apply_batch = client.register_script(APPLY_BATCH)
        self.epochs: dict[TP, int] = {}

    async def on_assigned(self, partitions: set[TP], generation: int) -> None:
        ordered = sorted(partitions)
        async with self.client.pipeline(transaction=True) as pipe:
            for tp in ordered:
                pipe.hincrby(self.keys.epochs, field(tp), 1)
            epochs = await pipe.execute()
        self.epochs = dict(zip(ordered, epochs, strict=True))

    async def positions(self, partitions: set[TP]) -> dict[TP, int]:
        ordered = sorted(partitions)
        stored = await self.client.hmget(self.keys.checkpoints, [field(tp) for tp in ordered])
        return {tp: int(value) for tp, value in zip(ordered, stored, strict=True) if value is not None}

    async def handle(self, batch: Batch) -> None:
        args: list[Any] = [len(batch.parts)]
        fields = {}
        for tp, part in batch.parts.items():
            fields[field(tp)] = tp
            args += [field(tp), self.epochs[tp], part.start, part.end]
        counts = Counter(record.key for part in batch.parts.values() for record in part.records)
        for key, count in counts.items():
            args += [key, count]
        keys = [self.keys.counts, self.keys.checkpoints, self.keys.epochs]
        outcome, *detail = await self.apply_batch(keys=keys, args=args)
        if outcome == b"STALE":
            raise StalePosition({fields[name.decode()] for name in detail})
        if outcome == b"FENCED":
            raise Fenced(f"partition {detail[0].decode()} belongs to a newer owner")

    async def on_revoked(self, partitions: set[TP]) -> None:
        for tp in partitions:
            self.epochs.pop(tp, None)

    async def tick(self, now: float, at_end: Mapping[TP, bool]) -> None:
        # Counted, so a test can see that ticks keep coming while the worker is idle.
        await self.client.incr(self.keys.ticks)


def counting_handler(key_prefix: str) -> HandlerFactory:
    @asynccontextmanager
    async def factory(settings: Settings) -> AsyncIterator[BatchHandler]:
        # No client-side retries: a failed write is retried by the runtime, with its backoff.
        client = redis.Redis.from_url(
            settings.redis.url, socket_timeout=5, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        try:
            yield CountingHandler(client, CountingKeys(key_prefix))
        finally:
            await client.aclose()

    return factory


def main() -> None:
    settings = Settings()
    topic = full_name(CLICKS, settings.kafka.topic_prefix)
    run_worker(settings, counting_handler(os.environ["COUNTING_KEY_PREFIX"]), [topic], os.environ["COUNTING_GROUP"])


if __name__ == "__main__":
    main()
