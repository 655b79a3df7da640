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

from profiles.model_store import ModelStore
from profiles.namespaces import Namespaces
from profiles.segment_store import SegmentStore
from profiles.store import ProfileStore
from services.api.population import PopulationCache
from services.model_cache import ModelCache
from services.settings import Settings


@dataclass(frozen=True)
class Served:
    namespace: str
    store: ProfileStore
    segments: SegmentStore
    population: PopulationCache
    models: ModelCache


class ServingNamespace:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.namespaces = Namespaces(redis)
        self.redis = redis
        self.settings = settings
        self.default = settings.profile.namespace
        self.refresh_s = settings.api.serving_refresh_s
        self.specs = settings.models.specs()
        self._served: dict[str, Served] = {}
        self._current = self._for(self.default)
        self._read_at = float("-inf")

    def _for(self, namespace: str) -> Served:
        served = self._served.get(namespace)
        if served is None:
            store = ProfileStore(self.redis, namespace)
            models = self.settings.models
            served = Served(
                namespace,
                store,
                SegmentStore(self.redis, namespace),
                PopulationCache(store, self.settings.api.rfm_refresh_s),
                ModelCache(
                    ModelStore(self.redis, namespace),
                    self.specs,
                    models.secret.get_secret_value().encode(),
                    models.reload_s,
                ),
            )
            self._served[namespace] = served
        return served

    async def current(self) -> Served:
        if time.monotonic() - self._read_at >= self.refresh_s:
            read_at = time.monotonic()
            self._current = self._for(await self.namespaces.serving(self.default))
            self._read_at = read_at
        return self._current
