"""The models a serving process scores with: the active version of each, verified, reloaded when it changes.

``current()`` polls the active versions (one round trip) at most every ``models.reload_s`` and loads only
the ones that changed, so a new version or a rollback is served within that time (the issue asks ≤ 5 s;
the default is 2 s). A snapshot that fails verification (unsigned, tampered, another secret, another
definition of the score) is never unpickled or served: the process keeps what it had and logs the
refusal once per version. Without a secret nothing is loaded and every score is the documented cold-start
heuristic, flagged as such.
"""

from __future__ import annotations

import asyncio
import logging
import time

from profiles.model_store import ModelStore
from profiles.models.scoring import ServedModel, served_model
from profiles.models.snapshots import SnapshotRejectedError, load_snapshot
from profiles.models.specs import ModelSpec

log = logging.getLogger(__name__)


class ModelCache:
    def __init__(self, store: ModelStore, specs: dict[str, ModelSpec], secret: bytes, reload_s: float) -> None:
        self.store = store
        self.specs = specs
        self.secret = secret
        self.reload_s = reload_s
        self.models: dict[str, ServedModel] = {}
        self.refused: dict[str, int] = {}  # model → the version refused last (not retried)
        self._checked_at = float("-inf")
        self._lock = asyncio.Lock()

    async def current(self) -> dict[str, ServedModel]:
        if time.monotonic() - self._checked_at < self.reload_s or not self.secret:
            return self.models
        if self._lock.locked():
            return self.models  # another request is reloading: serve what is loaded
        async with self._lock:
            await self._reload()
            self._checked_at = time.monotonic()
        return self.models

    async def _reload(self) -> None:
        active = await self.store.active_versions(list(self.specs))
        for name, version in active.items():
            held = self.models.get(name)
            if version is None or (held is not None and held.version == version) or self.refused.get(name) == version:
                continue
            blob = await self.store.snapshot(name, version)
            if blob is None:
                continue  # deleted between the two reads: the next poll sees the new active version
            try:
                # In a thread: the first snapshot a process loads imports River and SciPy (~0.9 s), and a
                # large model takes a while to unpickle; on the event loop, that stalled every batch or
                # request of the process meanwhile (a worker's first version arrives mid-traffic).
                loaded = served_model(await asyncio.to_thread(load_snapshot, blob, self.secret), self.specs[name])
            except SnapshotRejectedError as exc:
                log.error("refusing %s v%d: %s", name, version, exc)
                self.refused[name] = version
                continue
            self.models = {**self.models, name: loaded}  # a new dict: readers holding the old one are unaffected
            log.info("serving %s v%d", name, version)
