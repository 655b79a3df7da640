"""A serving process's model cache (``services.model_cache``) against the real Redis."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from profiles.model_store import ModelStore
from profiles.models.snapshots import ModelSnapshot, dump_snapshot, load_snapshot
from profiles.models.specs import CHURN_RISK, default_specs
from profiles.models.trainer import ModelTrainer
from services import model_cache
from services.model_cache import ModelCache
from services.settings import Settings
from tests.redis_support import scratch_namespace

pytestmark = pytest.mark.integration
SECRET = b"model-cache-test"
#: How long loading the snapshot takes here: River's first import in a process is ~0.9 s.
SLOW_S = 0.5


def test_a_new_version_is_loaded_without_stalling_the_event_loop(
    settings: Settings, local_stack: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_load(blob: bytes, secret: bytes) -> ModelSnapshot:
        time.sleep(SLOW_S)
        return load_snapshot(blob, secret)

    monkeypatch.setattr(model_cache, "load_snapshot", slow_load)
    asyncio.run(_load(settings))


async def _load(settings: Settings) -> None:
    spec = default_specs()[CHURN_RISK]
    trainer = ModelTrainer(spec)
    blob = dump_snapshot(trainer.snapshot_meta(version=1, created_at_ms=0, source_offset=0), trainer, SECRET)
    async with scratch_namespace(settings, "cache") as (redis, namespace):
        store = ModelStore(redis, namespace)
        await store.publish(CHURN_RISK, 1, blob, keep=3)
        cache = ModelCache(store, {CHURN_RISK: spec}, SECRET, reload_s=0.0)
        ticks: list[float] = []

        async def tick() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        models = await cache.current()
        ticker.cancel()
    assert models[CHURN_RISK].version == 1
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert len(ticks) > 10
    assert max(gaps) < SLOW_S / 2, f"the event loop stalled {max(gaps):.3f} s while a snapshot loaded"
