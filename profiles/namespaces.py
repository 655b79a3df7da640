"""Namespaces in Redis: which exist, which one the API serves, replay checkpoints, and dropping one.

Keys (outside every namespace):

- ``rapport:ns:known`` — a set of the namespaces that replays or workers have written;
- ``rapport:ns:serving:<configured>`` — the namespace an API configured with namespace ``<configured>``
  serves (absent: that one). A promotion sets it in one transaction with the mark below, and each API
  request reads the pointer once, so no response mixes two namespaces. Keyed by the configured namespace
  so that deployments (and test runs) sharing one Redis do not switch each other.
- ``rapport:ns:superseded:<ns>`` — the namespace promoted in the place of ``<ns>`` while ``<ns>`` was
  served (absent: ``<ns>`` was never replaced, or is served again). Workers of ``<ns>`` read it to stop
  publishing segment changes (``streams.segment_stage``). Written with the pointer, in one transaction.
- ``rapport:ns:dropping`` — a set of the namespaces whose drop started and has not finished (it was
  interrupted, or runs now): they hold part of their keys, so they are neither promoted nor replayed into.
  A drop adds its namespace in a transaction that checks it is not served, a promotion checks the set in
  the transaction that switches: one of the two refuses, whichever comes second. Processes that write a
  namespace check the set once they have joined their consumer group (``begin_drop`` says why).

And in a namespace: ``rapport:<ns>:replay`` — the replay's checkpoint (JSON: the plan, the next offset of
each raw partition, the record sequence, done or not, the chunk size, the counts so far), written in each
chunk's transaction, and ``rapport:<ns>:replay:refused``, set in that transaction while a profile write is
refused so that the checkpoint is not (it never outlives the transaction); ``rapport:<ns>:replay:lock``, the
lock of the replay running into it (``services.redis_lock``: host, PID, token).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from profiles.redis_values import as_text

KNOWN: Final = "rapport:ns:known"
SERVING: Final = "rapport:ns:serving"
SUPERSEDED: Final = "rapport:ns:superseded"
DROPPING: Final = "rapport:ns:dropping"
#: Prefixes of keys that belong to no namespace: no namespace may take these names.
RESERVED: Final = frozenset({"ns", "keys", "rl", "dlq"})
#: A namespace's name: no glob characters (``drop`` SCANs by a pattern built from it), no ``:`` (keys are
#: split on it), bounded (it is in every key and in the workers' consumer group).
NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class NamespaceNameError(ValueError):
    pass


class ReservedNameError(NamespaceNameError):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name!r} is reserved (keys outside namespaces use it)")


class NamespaceStateError(RuntimeError):
    """What a namespace is doing forbids the command: it is served (a drop), being dropped (a promotion, a
    replay into it), or holds an unfinished replay (a promotion)."""


def check_name(name: str) -> str:
    """``name`` if it can name a namespace.

    >>> check_name("rebuild-2026_12")
    'rebuild-2026_12'
    >>> check_name("l*")
    Traceback (most recent call last):
    ...
    profiles.namespaces.NamespaceNameError: 'l*' is not a namespace name ([a-z0-9][a-z0-9_-]{0,62})
    >>> check_name("keys")
    Traceback (most recent call last):
    ...
    profiles.namespaces.ReservedNameError: 'keys' is reserved (keys outside namespaces use it)
    """
    if NAME.fullmatch(name) is None:
        raise NamespaceNameError(f"{name!r} is not a namespace name ({NAME.pattern})")
    if name in RESERVED:
        raise ReservedNameError(name)
    return name


def key_pattern(namespace: str) -> str:
    """Every key of a namespace (``check_name``: a name holds no glob character)."""
    return f"rapport:{check_name(namespace)}:*"


class Namespaces:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def register(self, namespace: str) -> None:
        await self.redis.sadd(KNOWN, check_name(namespace))

    async def known(self) -> list[str]:
        return sorted(as_text(v) for v in await self.redis.smembers(KNOWN))

    async def serving(self, configured: str) -> str:
        value = await self.redis.get(f"{SERVING}:{configured}")
        return configured if value is None else as_text(value)

    async def dropping(self) -> set[str]:
        """The namespaces whose drop started and has not finished."""
        return {as_text(v) for v in await self.redis.smembers(DROPPING)}

    async def is_dropping(self, namespace: str) -> bool:
        return bool(await self.redis.sismember(DROPPING, namespace))

    async def refuse_unpromotable(self, namespace: str) -> None:
        """Raise ``NamespaceStateError`` if ``namespace`` must not be served: it is being dropped, or a replay
        into it has not finished (it holds part of the history)."""
        if await self.is_dropping(namespace):
            raise NamespaceStateError(
                f"{namespace!r} is being dropped (a drop was interrupted, or runs now): it holds part of its keys"
            )
        checkpoint = await self.checkpoint(namespace)
        if checkpoint is not None and not checkpoint["done"]:
            raise NamespaceStateError(
                f"the replay into {namespace!r} has not finished: run it again to finish it, then promote it"
            )

    async def promote(self, configured: str, namespace: str) -> str | None:
        """Serve ``namespace`` where ``configured`` is configured; returns the one served before (None: the
        configured one), now superseded by ``namespace``. ``NamespaceStateError`` if it must not be served
        (``refuse_unpromotable``)."""
        pointer = f"{SERVING}:{configured}"
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    # A concurrent promotion, drop or replay checkpoint makes this one start again.
                    await pipe.watch(pointer, DROPPING, self.checkpoint_key(namespace))
                    await Namespaces(pipe).refuse_unpromotable(namespace)
                    value = await pipe.get(pointer)
                    previous = None if value is None else as_text(value)
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    pipe.set(pointer, check_name(namespace))
                    pipe.delete(f"{SUPERSEDED}:{namespace}")
                    if (previous or configured) != namespace:
                        pipe.set(f"{SUPERSEDED}:{previous or configured}", namespace)
                    await pipe.execute()
                    return previous
                except WatchError:
                    continue

    async def serves_another(self, namespace: str) -> str | None:
        """The namespace an API configured with ``namespace`` serves in its place since a promotion (None: none,
        or ``namespace`` itself). Such a namespace still holds that API's webhook registrations."""
        value = await self.redis.get(f"{SERVING}:{namespace}")
        served = None if value is None else as_text(value)
        return None if served == namespace else served

    async def superseded_by(self, namespace: str) -> str | None:
        """The namespace promoted in ``namespace``'s place while it was served, if it is not served again."""
        value = await self.redis.get(f"{SUPERSEDED}:{namespace}")
        return None if value is None else as_text(value)

    @staticmethod
    def checkpoint_key(namespace: str) -> str:
        """Where a replay keeps its checkpoint (written with each chunk, ``streams.replay``)."""
        return f"rapport:{namespace}:replay"

    @staticmethod
    def replay_lock_key(namespace: str) -> str:
        """The lock a replay into ``namespace`` holds while it runs (one at a time)."""
        return f"rapport:{check_name(namespace)}:replay:lock"

    async def checkpoint(self, namespace: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.checkpoint_key(namespace))
        return None if raw is None else dict(orjson.loads(raw))

    async def save_checkpoint(self, namespace: str, checkpoint: dict[str, Any]) -> None:
        await self.redis.set(self.checkpoint_key(namespace), orjson.dumps(checkpoint))

    async def begin_drop(self, configured: str, namespace: str) -> bool:
        """Mark ``namespace`` as being dropped (``DROPPING``); True if this call marked it, False if an
        unfinished drop had. ``NamespaceStateError`` if it is what ``configured`` serves.

        Marked before anything checks who writes the namespace: a writer (worker, trainer, deliverer) looks
        for the mark once it is a member of its consumer group (``refuse_writers``), so either the writer sees
        the mark and stops, or the drop, asking Kafka after marking, sees the writer and is called off."""
        pointer = f"{SERVING}:{configured}"
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(pointer)  # a concurrent promotion makes this one look again
                    if await Namespaces(pipe).serving(configured) == namespace:
                        raise NamespaceStateError(f"{namespace!r} is being served: promote another namespace first")
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    pipe.sadd(DROPPING, check_name(namespace))
                    added: list[int] = await pipe.execute()
                    return added[0] == 1
                except WatchError:
                    continue

    async def call_off_drop(self, namespace: str) -> None:
        """Unmark a drop that ``begin_drop`` marked and that deleted nothing."""
        await self.redis.srem(DROPPING, namespace)

    async def finish_drop(
        self, namespace: str, batch: int = 500, keep: Callable[[bytes | str], bool] | None = None
    ) -> AsyncIterator[int]:
        """Delete every key of ``namespace`` but those ``keep`` holds, marked by ``begin_drop``
        (``unlink_matching``); yields the running count of keys deleted. Unmarked once its last key is gone."""
        deleted = 0
        async for deleted in unlink_matching(self.redis, key_pattern(namespace), batch, keep):
            yield deleted
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(KNOWN, namespace)
            pipe.delete(f"{SUPERSEDED}:{namespace}")
            pipe.srem(DROPPING, namespace)
            await pipe.execute()
        yield deleted

    async def drop(self, configured: str, namespace: str, batch: int = 500) -> AsyncIterator[int]:
        """``begin_drop`` and ``finish_drop``, for a caller that knows nothing writes ``namespace``."""
        await self.begin_drop(configured, namespace)
        async for deleted in self.finish_drop(namespace, batch):
            yield deleted

    async def refuse_writers(self, namespace: str) -> None:
        """Raise ``NamespaceStateError`` if ``namespace`` is being dropped: what a process wrote into it would
        come back behind the drop, half a namespace. Processes that write a namespace ask once they are
        members of their consumer group (``begin_drop`` says why then), the worker also before it starts."""
        if await self.is_dropping(namespace):
            raise NamespaceStateError(
                f"namespace {namespace!r} is being dropped: finish the drop (`rapport namespace drop {namespace}`) "
                "or configure another namespace"
            )


async def unlink_matching(
    redis: Redis, pattern: str, batch: int = 500, keep: Callable[[bytes | str], bool] | None = None
) -> AsyncIterator[int]:
    """Delete the keys matching ``pattern`` but those ``keep`` holds, a batch at a time (``SCAN`` + ``UNLINK``:
    Redis frees the memory in the background and no command blocks it); yields the running count of keys
    deleted."""
    deleted = 0
    keys: list[bytes | str] = []
    async for key in redis.scan_iter(match=pattern, count=batch):
        if keep is not None and keep(key):
            continue
        keys.append(key)
        if len(keys) >= batch:
            deleted += await redis.unlink(*keys)
            keys = []
            yield deleted
    if keys:
        deleted += await redis.unlink(*keys)
        yield deleted
