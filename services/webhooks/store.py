"""Webhook registrations and their delivery logs in Redis (namespace-scoped, like everything else).

- ``rapport:<ns>:wh`` — hash: webhook id → registration (JSON, secret included);
- ``rapport:<ns>:wh:log:{<id>}`` — the delivery log, newest first, capped at ``LOG_SIZE`` entries;
- ``rapport:<ns>:wh:handover`` — where the shared consumer group of earlier deliverers had got to, taken
  once (``Handover``, services/webhooks/starts.py).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal

import msgspec
from redis.asyncio import Redis

LOG_SIZE: Final = 1000


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    webhook_id: str
    url: str
    segments: list[str]  # empty: every segment
    secret: str
    created_at_ms: int

    def wants(self, segment: str) -> bool:
        return not self.segments or segment in self.segments


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One change's delivery to one webhook: how it ended, after how many attempts."""

    change_id: str
    segment: str
    status: Literal["delivered", "dead_lettered"]
    attempts: int
    last_status_code: int | None  # None: no HTTP answer (connection error, timeout, refused target)
    last_error: str | None = None  # why the last attempt failed; None when it was delivered
    at_ms: int


class Handover(msgspec.Struct, frozen=True, kw_only=True):
    """The shared group's committed positions when the first deliverer with one group per webhook started
    (``at_ms``): where the webhooks registered before then go on from."""

    at_ms: int
    offsets: dict[int, int]  # partition → first offset not delivered


_HOOK = msgspec.json.Decoder(Webhook)
_HANDOVER = msgspec.json.Decoder(Handover)
_DELIVERY = msgspec.json.Decoder(Delivery)
_ENCODER = msgspec.json.Encoder()


class WebhookStore:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self._hooks = f"rapport:{namespace}:wh"
        self._log = f"rapport:{namespace}:wh:log"
        self._handover = f"rapport:{namespace}:wh:handover"

    async def register(self, url: str, segments: list[str]) -> Webhook:
        hook = Webhook(
            webhook_id=f"wh_{secrets.token_hex(8)}",
            url=url,
            segments=sorted(set(segments)),
            secret=f"whsec_{secrets.token_urlsafe(32)}",
            created_at_ms=int(time.time() * 1000),
        )
        await self.redis.hset(self._hooks, hook.webhook_id, _ENCODER.encode(hook))
        return hook

    async def all(self) -> list[Webhook]:
        raw = await self.redis.hgetall(self._hooks)
        return sorted((_HOOK.decode(v) for v in raw.values()), key=lambda h: h.webhook_id)

    async def get(self, webhook_id: str) -> Webhook | None:
        blob = await self.redis.hget(self._hooks, webhook_id)
        return None if blob is None else _HOOK.decode(blob)

    async def remove(self, webhook_id: str) -> bool:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self._hooks, webhook_id)
            pipe.unlink(self._log_key(webhook_id))
            removed, _ = await pipe.execute()
        return bool(removed)

    async def forget_log(self, webhook_id: str) -> None:
        await self.redis.unlink(self._log_key(webhook_id))

    async def log(self, webhook_id: str, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self._log_key(webhook_id), *(_ENCODER.encode(d) for d in deliveries))
            pipe.ltrim(self._log_key(webhook_id), 0, LOG_SIZE - 1)
            await pipe.execute()

    async def deliveries(self, webhook_id: str, limit: int) -> list[Delivery]:
        return [_DELIVERY.decode(d) for d in await self.redis.lrange(self._log_key(webhook_id), 0, limit - 1)]

    async def handover(self, shared_offsets: Callable[[], Awaitable[dict[int, int]]]) -> Handover:
        """The hand-over from the shared group, taken now from ``shared_offsets()`` if it never was. The first
        deliverer to record it wins: every deliverer starts the same webhooks at the same positions."""
        blob = await self.redis.get(self._handover)
        if blob is None:
            taken = Handover(at_ms=int(time.time() * 1000), offsets=await shared_offsets())
            await self.redis.set(self._handover, _ENCODER.encode(taken), nx=True)
            blob = await self.redis.get(self._handover)
            if blob is None:  # deleted in between (a drop): this deliverer's own reading stands
                return taken
        return _HANDOVER.decode(blob)

    def _log_key(self, webhook_id: str) -> str:
        return f"{self._log}:{{{webhook_id}}}"

    def holds(self, key: str | bytes) -> bool:
        """Whether ``key`` is one of this store's (registrations, delivery logs, hand-over): what a drop of a
        namespace that an API is configured with keeps (``rapport namespace drop``)."""
        name = key.decode() if isinstance(key, bytes) else key
        return name in (self._hooks, self._handover) or name.startswith(f"{self._log}:")
