"""Redis clients built from settings, when a process starts (never at import)."""

from __future__ import annotations

from redis.asyncio import Redis

from services.settings import Settings


def make_redis(settings: Settings) -> Redis:
    """Binary-safe (profiles are msgpack), with timeouts so an outage surfaces as an error to retry."""
    return Redis.from_url(
        settings.redis.url,
        decode_responses=False,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        health_check_interval=10,
    )
