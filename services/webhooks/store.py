"""Webhook registrations and their delivery logs in Redis (namespace-scoped, like everything else).

- ``rapport:<ns>:wh`` — hash: webhook id → registration (JSON, secret included), and ``pause:<id>`` → why and
  since when its deliveries are paused (``Pause``), in the same hash so that a removal takes both at once;
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


class Pause(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook's deliveries stopped, until it is resumed (``POST /v1/webhooks/{id}/resume``): its endpoint
    answered 410 Gone, or it was paused through the API. They resume at the first change not delivered."""

    at_ms: int
    reason: str


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
_PAUSE = msgspec.json.Decoder(Pause)
_HANDOVER = msgspec.json.Decoder(Handover)
_DELIVERY = msgspec.json.Decoder(Delivery)
_ENCODER = msgspec.json.Encoder()
_PAUSED: Final = "pause:"
# Only a registered webhook is paused: a pause landing after a removal would otherwise outlive it.
_PAUSE_IF_REGISTERED: Final = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
"""
# A pause held only where there is none, and given back only while it is still the one held: a rewind racing
# someone else's pause or resume of the same webhook neither overwrites nor clears theirs.
_HOLD_IF_FREE: Final = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3])
"""
_RELEASE_IF_HELD: Final = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


# Pauses share the hash with the registrations: only the fields that are not pauses count.
_REGISTER_UNDER_LIMIT: Final = """
local registered = 0
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, string.len(ARGV[4])) ~= ARGV[4] then registered = registered + 1 end
end
if registered >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class TooManyWebhooksError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} webhooks are registered, the most allowed (webhooks.max_registered)")
        self.limit = limit


class WebhookStore:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self._hooks = f"rapport:{namespace}:wh"
        self._log = f"rapport:{namespace}:wh:log"
        self._handover = f"rapport:{namespace}:wh:handover"

    async def register(self, url: str, segments: list[str], *, limit: int | None = None) -> Webhook:
        """A new webhook; raises ``TooManyWebhooksError`` if ``limit`` webhooks are registered already (checked
        and registered in one script: two registrations at once cannot both take the last place)."""
        hook = Webhook(
            webhook_id=f"wh_{secrets.token_hex(8)}",
            url=url,
            segments=sorted(set(segments)),
            secret=f"whsec_{secrets.token_urlsafe(32)}",
            created_at_ms=int(time.time() * 1000),
        )
        blob = _ENCODER.encode(hook)
        if limit is None:
            await self.redis.hset(self._hooks, hook.webhook_id, blob)
        elif not await self.redis.eval(_REGISTER_UNDER_LIMIT, 1, self._hooks, hook.webhook_id, blob, limit, _PAUSED):
            raise TooManyWebhooksError(limit)
        return hook

    async def all(self) -> list[tuple[Webhook, Pause | None]]:
        """Every registration with its pause, if it is paused, by id."""
        raw = {_text(field): blob for field, blob in (await self.redis.hgetall(self._hooks)).items()}
        hooks = sorted((_HOOK.decode(blob) for field, blob in raw.items() if not field.startswith(_PAUSED)), key=_id)
        return [(hook, _pause(raw.get(_PAUSED + hook.webhook_id))) for hook in hooks]

    async def get(self, webhook_id: str) -> tuple[Webhook, Pause | None] | None:
        blob, paused = await self.redis.hmget(self._hooks, [webhook_id, _PAUSED + webhook_id])
        return None if blob is None else (_HOOK.decode(blob), _pause(paused))

    async def remove(self, webhook_id: str) -> bool:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self._hooks, webhook_id, _PAUSED + webhook_id)
            pipe.unlink(self._log_key(webhook_id))
            removed, _ = await pipe.execute()
        return bool(removed)

    async def pause(self, webhook_id: str, reason: str) -> bool:
        """Pause a registered webhook's deliveries (again: the newest reason stands); False if it is not
        registered."""
        pause = Pause(at_ms=int(time.time() * 1000), reason=reason)
        paused = await self.redis.eval(
            _PAUSE_IF_REGISTERED, 1, self._hooks, webhook_id, _PAUSED + webhook_id, _ENCODER.encode(pause)
        )
        return bool(paused)

    async def resume(self, webhook_id: str) -> bool:
        """Whether the webhook was paused."""
        return bool(await self.redis.hdel(self._hooks, _PAUSED + webhook_id))

    async def hold(self, webhook_id: str, reason: str) -> Pause | None:
        """Pause a registered webhook that is not paused, for as long as the caller needs it (give it back with
        ``release``); None if it is paused already, or not registered."""
        pause = Pause(at_ms=int(time.time() * 1000), reason=reason)
        held = await self.redis.eval(
            _HOLD_IF_FREE, 1, self._hooks, webhook_id, _PAUSED + webhook_id, _ENCODER.encode(pause)
        )
        return pause if held else None

    async def release(self, webhook_id: str, pause: Pause) -> bool:
        """Resume the webhook if ``pause`` (``hold``'s) is still its pause; False if someone paused it again or
        resumed it meanwhile (their pause, or their resume, stands)."""
        return bool(
            await self.redis.eval(_RELEASE_IF_HELD, 1, self._hooks, _PAUSED + webhook_id, _ENCODER.encode(pause))
        )

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


def _text(field: str | bytes) -> str:
    return field.decode() if isinstance(field, bytes) else field


def _id(hook: Webhook) -> str:
    return hook.webhook_id


def _pause(blob: bytes | str | None) -> Pause | None:
    return None if blob is None else _PAUSE.decode(blob)
