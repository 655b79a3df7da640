"""Model snapshots in Redis, per namespace: a thin adapter (the bytes are signed by ``profiles.models.snapshots``).

Keys (``<ns>`` the namespace, ``<m>`` the model name):

- ``rapport:<ns>:models:{<m>}:v`` — hash: version → signed snapshot; the newest ``keep`` are kept (and the
  active one, whatever its age);
- ``rapport:<ns>:models:{<m>}:next`` — the last version handed out (``INCR``): versions never go back, even
  after old ones are deleted;
- ``rapport:<ns>:models:{<m>}:active`` — the version serving processes load. Each new snapshot becomes
  active, unless ``…:pinned`` is set by a rollback: then the pinned version is served while training goes
  on, until ``release``;
- ``rapport:<ns>:models:{<m>}:drift`` — the latest drift events, newest first (JSON);
- ``rapport:<ns>:models:{<m>}:adopted`` — the version a replay copied from the served namespace (``adopt``).
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from profiles.models.snapshots import retain
from profiles.redis_values import as_bytes

DRIFT_KEPT = 100
_AT_LEAST = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
"""


class ModelStore:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace

    def _key(self, name: str, part: str) -> str:
        return f"rapport:{self.namespace}:models:{{{name}}}:{part}"

    async def next_version(self, name: str) -> int:
        return int(await self.redis.incr(self._key(name, "next")))

    async def publish(self, name: str, version: int, blob: bytes, keep: int) -> list[int]:
        """Store ``version``; make it active unless a rollback pinned another; delete versions beyond the
        newest ``keep`` (never the active one). Returns the versions deleted."""
        pinned = await self.pinned(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(name, "v"), str(version), blob)
            if pinned is None:
                pipe.set(self._key(name, "active"), version)
            pipe.hkeys(self._key(name, "v"))
            versions = (await pipe.execute())[-1]
        active = version if pinned is None else pinned
        _, dropped = retain((int(v) for v in versions), keep)
        dropped = [v for v in dropped if v != active]
        if dropped:
            await self.redis.hdel(self._key(name, "v"), *(str(v) for v in dropped))
        return dropped

    async def active_version(self, name: str) -> int | None:
        value = await self.redis.get(self._key(name, "active"))
        return None if value is None else int(value)

    async def active_versions(self, names: Sequence[str]) -> dict[str, int | None]:
        """Every model's active version in one round trip (what serving polls)."""
        values = await self.redis.mget([self._key(n, "active") for n in names]) if names else []
        return {n: None if v is None else int(v) for n, v in zip(names, values, strict=True)}

    async def snapshot(self, name: str, version: int) -> bytes | None:
        value = await self.redis.hget(self._key(name, "v"), str(version))
        return None if value is None else as_bytes(value)

    async def snapshots(self, name: str) -> dict[int, bytes]:
        raw = await self.redis.hgetall(self._key(name, "v"))
        return {int(k): as_bytes(v) for k, v in raw.items()}

    async def pinned(self, name: str) -> int | None:
        value = await self.redis.get(self._key(name, "pinned"))
        return None if value is None else int(value)

    async def rollback(self, name: str, version: int) -> bool:
        """Serve ``version`` (kept versions only) until ``release``; False if it is not kept."""
        if not await self.redis.hexists(self._key(name, "v"), str(version)):
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(name, "pinned"), version)
            pipe.set(self._key(name, "active"), version)
            await pipe.execute()
        return True

    async def release(self, name: str) -> int | None:
        """Undo a rollback: serve the newest kept version again; returns it."""
        versions = [int(v) for v in await self.redis.hkeys(self._key(name, "v"))]
        newest = max(versions, default=None)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(name, "pinned"))
            if newest is not None:
                pipe.set(self._key(name, "active"), newest)
            await pipe.execute()
        return newest

    async def adopt(self, source: ModelStore, name: str) -> int | None:
        """Serve here the version ``source`` serves of model ``name``, unless this namespace trained its own
        (a retrain, or its trainer since): a rebuilt namespace must not fall back to cold-start scores when
        promoted. The snapshot is copied as signed; version numbers go on from it here. Returns the version
        adopted now (None: nothing to do)."""
        version = await source.active_version(name)
        if version is None:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self._key(name, "active"))
            pipe.get(self._key(name, "adopted"))
            active, adopted = await pipe.execute()
        if active is not None and (adopted is None or int(active) != int(adopted) or int(active) == version):
            return None
        blob = await source.snapshot(name, version)
        if blob is None:
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(name, "v"), str(version), blob)
            pipe.set(self._key(name, "active"), version)
            pipe.set(self._key(name, "adopted"), version)
            if adopted is not None:
                pipe.hdel(self._key(name, "v"), str(int(adopted)))
            # Versions here never go back: the next one trained here comes after the adopted one.
            pipe.eval(_AT_LEAST, 1, self._key(name, "next"), version)
            await pipe.execute()
        return version

    async def record_drift(self, name: str, event_json: bytes) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self._key(name, "drift"), event_json)
            pipe.ltrim(self._key(name, "drift"), 0, DRIFT_KEPT - 1)
            await pipe.execute()

    async def drift(self, name: str, limit: int = 10) -> list[bytes]:
        return [as_bytes(v) for v in await self.redis.lrange(self._key(name, "drift"), 0, limit - 1)]
