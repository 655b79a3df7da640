"""Which namespace the API serves: the one promoted in place of the configured one
(``rapport namespace promote``, ``profiles.namespaces``), else the configured one.

Each request takes one ``Served`` at its start and reads only through it, so a promotion never mixes two
namespaces in one response. The pointer is re-read at most every ``api.serving_refresh_s`` (one round trip
per process per period, not per request); a promotion therefore reaches every API process within that time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from profiles.namespaces import Namespaces
from profiles.segment_store import SegmentStore
from profiles.store import ProfileStore
from services.api.population import PopulationCache


@dataclass(frozen=True)
class Served:
    namespace: str
    store: ProfileStore
    segments: SegmentStore
    population: PopulationCache


class ServingNamespace:
    def __init__(self, redis: Redis, default: str, refresh_s: float, rfm_refresh_s: float) -> None:
        self.namespaces = Namespaces(redis)
        self.redis = redis
        self.default = default
        self.refresh_s = refresh_s
        self.rfm_refresh_s = rfm_refresh_s
        self._served: dict[str, Served] = {}
        self._current = self._for(default)
        self._read_at = float("-inf")

    def _for(self, namespace: str) -> Served:
        served = self._served.get(namespace)
        if served is None:
            store = ProfileStore(self.redis, namespace)
            served = Served(
                namespace, store, SegmentStore(self.redis, namespace), PopulationCache(store, self.rfm_refresh_s)
            )
            self._served[namespace] = served
        return served

    async def current(self) -> Served:
        if time.monotonic() - self._read_at >= self.refresh_s:
            read_at = time.monotonic()
            self._current = self._for(await self.namespaces.serving(self.default))
            self._read_at = read_at
        return self._current
