"""Redis client figures: what a pipelined command costs the worker's client beside redis-py's own, one run.

The worker writes a batch as pipelines of several commands per customer (``SET`` of a profile's pending
snapshots and view, ``ZADD`` of its entries and due time, …), so the client's cost per pipelined command is
part of its cost per event. Measured against the local Redis on loopback, 2,000 commands a pipeline:

1. redis-py's client as it comes: commands packed in Python, each reply read under its own timeout;
2. ``make_redis``: hiredis packs, one deadline for the pipeline's replies (``services/redis_client.py``);
3. redis-py's client without any timeout (commands still packed in Python): what its timeouts cost it.

CPU-bound on the client side (Redis answers 2,000 SETs in well under a millisecond), so best of a few passes.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import ConnectionPool, Redis

from bench.harness import Figure, Ratio, bench_settings, run_namespace
from services.redis_client import make_redis
from services.settings import Settings

COMMANDS = 2_000
PASSES = 15
VALUE = b"x" * 300  # about a pending-snapshot entry


async def _us_per_command(client: Redis, prefix: str) -> float:
    keys = [f"{prefix}:{i}" for i in range(COMMANDS)]
    best = float("inf")
    try:
        for _ in range(PASSES):
            started = time.perf_counter()
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(key, VALUE)
                await pipe.execute()
            best = min(best, time.perf_counter() - started)
    finally:
        await client.delete(*keys)
        await client.aclose()
    return best / COMMANDS * 1e6


def _plain(settings: Settings, timeout: float | None) -> Redis:
    pool = ConnectionPool.from_url(settings.redis.url, decode_responses=False, socket_timeout=timeout)
    return Redis.from_pool(pool)


async def _measure(settings: Settings, prefix: str) -> tuple[float, float, float]:
    return (
        await _us_per_command(_plain(settings, 5.0), f"{prefix}:a"),
        await _us_per_command(make_redis(settings), f"{prefix}:b"),
        await _us_per_command(_plain(settings, None), f"{prefix}:c"),
    )


def run(base: Settings) -> tuple[list[Figure], list[Ratio]]:
    with bench_settings(base) as settings:
        # Under a run namespace's prefix, so that a failed run's keys are dropped with it.
        stock, ours, floor = asyncio.run(_measure(settings, f"rapport:{run_namespace(settings, 'client')}:k"))
    note = f"pipelines of {COMMANDS:,} SETs of {len(VALUE)} B, best of {PASSES}"
    figures = [
        Figure("redis-py, 5 s socket timeout", stock, "µs/command", f"{note}; a timeout per reply"),
        Figure("make_redis", ours, "µs/command", f"{note}; hiredis packing, one deadline per pipeline"),
        Figure("redis-py, no timeout", floor, "µs/command", f"{note}; no bound on a stalled Redis at all"),
    ]
    ratios = [
        Ratio("redis-py with timeouts / make_redis", "redis-py, 5 s socket timeout", "make_redis"),
        Ratio("redis-py without timeouts / make_redis", "redis-py, no timeout", "make_redis"),
    ]
    return figures, ratios
