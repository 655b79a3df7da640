"""A replayed namespace's segments and models: what the served namespace holds, evaluated as live would.

A promoted namespace replaces the served one for the API, and after the hand-over its workers evaluate the
segments it holds. Without this, a promoted rebuild would serve no segment and cold-start scores, and its
workers would evaluate nothing. So each replay run into a namespace other than the served one:

1. **adopts the served segment definitions** (``SegmentStore.adopt_definitions``), versions unchanged, so
   memberships and change events keep meaning the same versions;
2. **adopts the served models** that the namespace has not trained itself (``ModelStore.adopt``; not with
   ``--retrain``, whose models are the namespace's own), so scores and score-reading rules stay the same;
3. **evaluates the memberships with the live worker's segment stage** (``streams.segment_stage``): after
   each chunk, in the chunk's transaction (``after_batch``); at the end of the run, the evaluation of every
   existing profile against each definition version not evaluated yet (``backfill_step``) and then the due
   timers, at the replay's clock. Memberships are a function of the profile, the instant, the definition
   and the scores, so the namespace ends with the memberships live processing would have now. While every
   live segment still awaits that evaluation of every profile and it has not begun (a first run), the
   chunks evaluate only their erased profiles: evaluating the changed ones too cost 40% of the replay's
   speed, for results the end of the run replaces. That evaluation goes through each page of profiles once
   for all the segments (``backfill_step`` groups them).

The changes this computes are **not published**: subscribers heard them from the live namespace already.
What a rebuild changes in the memberships is what ``rapport namespace diff`` reports and what ``rapport
namespace promote`` announces (docs/replay.md).
"""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis

from profiles.batch import BatchFold
from profiles.model_store import ModelStore
from profiles.segment_store import SegmentStore
from profiles.store import ProfileStore
from schemas.topics import RESOLVED, SEGMENT_CHANGES, full_name
from services.model_cache import ModelCache
from services.settings import Settings
from streams.segment_stage import PipelineOps, SegmentScores, SegmentStage

log = logging.getLogger(__name__)


class ReplaySegments:
    def __init__(self, settings: Settings, redis: Redis, namespace: str, source: str) -> None:
        """Segments of ``namespace`` evaluated as in ``source``, the namespace served when the replay started."""
        specs = settings.models.specs()
        secret = settings.models.secret.get_secret_value().encode()
        models = ModelCache(ModelStore(redis, namespace), specs, secret, settings.models.reload_s)
        self.redis = redis
        self.source = source
        self.store = SegmentStore(redis, namespace)
        self.stage = SegmentStage(
            self.store,
            settings.profile.fold_config(),
            full_name(SEGMENT_CHANGES, settings.kafka.topic_prefix),
            partitions=RESOLVED.partition_count(settings.kafka.event_partitions),
            scores=SegmentScores(models, specs),
            sweep_interval_s=settings.models.segment_sweep_s,
        )
        self.model_names = list(specs)
        self._changed = True

    async def adopt(self, *, models: bool) -> None:
        """Steps 1 and 2, at the start of each run (a catch-up adopts what changed since)."""
        await self.store.adopt_definitions(SegmentStore(self.redis, self.source))
        if models:
            ours, theirs = ModelStore(self.redis, self.store.namespace), ModelStore(self.redis, self.source)
            for name in self.model_names:
                version = await ours.adopt(theirs, name)
                if version is not None:
                    log.info("serving %s version %d of namespace %r", name, version, self.source)

    async def before_chunk(self) -> bool:
        """Whether the next chunk's changed profiles are evaluated (then the fold keeps their last event ids):
        not while every live segment awaits an evaluation of every profile that has not begun (a first
        run's, at its end: an evaluation already under way would miss what changes behind its cursor)."""
        now = _now_ms()
        live = set((await self.stage.live(now)).by_name)
        self._changed = bool(live) and await self.stage.unevaluated(now, not_begun=True) != live
        return self._changed

    async def after_chunk(self, fold: BatchFold) -> PipelineOps:
        """The chunk's memberships and timers, for its transaction; the changes are dropped (not published)."""
        _, ops = await self.stage.after_batch(fold, _now_ms(), changed=self._changed)
        return ops

    async def settle(self, profiles: ProfileStore) -> None:
        """Step 3's end of run: every profile against each definition version, then the due timers."""
        now_ms = _now_ms()
        everything = set(range(self.stage.partitions))
        while await self.stage.unevaluated(now_ms):
            _, ops = await self.stage.backfill_step(profiles, everything, now_ms)
            await self._write(ops)
        more = True
        while more:
            _, ops, more = await self.stage.due(profiles, everything, now_ms, limit=1000)
            await self._write(ops)

    async def _write(self, ops: PipelineOps) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            ops(pipe)
            if pipe.command_stack:
                await pipe.execute()


def _now_ms() -> int:
    return int(time.time() * 1000)
