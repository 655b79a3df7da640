"""``rapport replay --retrain``: the models rebuilt from the replayed history, as the namespace's own versions.

One definition each, shared with live processing: the customers' models views, the snapshot policy, labels
and census (``profiles.models.tracking``, called by the fold), the release of examples when the event-time
watermark moves (``streams.model_stage.ModelStage.release``), the pending snapshots, views, entries and
watermarks in the namespace (``profiles.pending_store``), and the trainer (``streams.trainer.Trainers``:
progressive validation, so a model's metrics are measured over the replayed history). What differs:
examples go straight to the trainers in this process instead of through ``models.examples``, and the
watermark comes from the replay's order.

**Event-time watermark.** A replay reads the raw topics in one order, merged by record time, so after each
chunk every partition's watermark target is the newest event time replayed so far minus
``models.watermark_lag_s``: an event more than that lag late arrives after its label may have been decided,
as it would live. A chunk, not an event, is the step; since snapshots come from the views, folded in
event-time order, the examples do not depend on it (nor on the order the live worker read the topics in).

**Versions and activation.** The models that learned in a chunk are published (signed) in the replayed
namespace's model store. The API serves a namespace's models only while it serves that namespace, so the new
versions activate when the namespace is promoted (``rapport namespace promote``), not before.

**Hand-over.** During the replay a snapshot's resume point is a replay position; when the replay completes,
each trained model is published once more with the end of ``models.examples`` as its resume point, so a
trainer of the promoted namespace (docs/replay.md, "Hand-over") learns what the new namespace's workers send
from then on, and nothing from before. A catch-up replay resumes from that version and publishes by replay
position again (every replay position is larger than any topic offset).

**Kill and resume.** A chunk's examples are learned and the models published, with the chunk's position as
their resume point, *before* the chunk's profiles, the models' state and watermarks and its checkpoint are
written (one transaction). A replay killed in between folds the chunk again on resume and gets
the same examples, which the trainers restored from those snapshots skip by position (``POSITIONS`` per
record sequence number). A replay killed before the publication loses nothing either: nothing of the chunk
was kept.
"""

from __future__ import annotations

from redis.asyncio import Redis

from profiles.batch import BatchFold
from profiles.config import FoldConfig
from profiles.model_store import ModelStore
from profiles.models.tracking import ModelTracking
from profiles.pending_store import PendingStore
from profiles.store import ProfileStore
from schemas.topics import MODEL_EXAMPLES, RESOLVED, full_name
from services.settings import Settings
from streams.model_stage import ModelStage
from streams.segment_stage import PipelineOps
from streams.trainer import Trainers

#: Example positions per record sequence number: a chunk starting at sequence ``s`` numbers its examples
#: ``s * POSITIONS + i`` (a chunk releases far fewer examples than this).
POSITIONS = 1 << 20


class RetrainConflictError(RuntimeError):
    """Another writer changed the namespace under a replay that retrains: its examples would not be exact."""


class ReplayModels:
    def __init__(self, settings: Settings, redis: Redis, namespace: str, config: FoldConfig) -> None:
        prefix = settings.kafka.topic_prefix
        self.stage = ModelStage(
            PendingStore(redis, namespace),
            settings.models.specs(),
            config,
            (full_name(MODEL_EXAMPLES, prefix), full_name(RESOLVED, prefix)),
            lag_ms=int(settings.models.watermark_lag_s * 1000),
            interval_s=settings.models.progress_interval_s,
        )
        self.trainers = Trainers(settings, ModelStore(redis, namespace))
        self.newest_ms = 0
        self.learned = 0

    async def start(self) -> None:
        """Each model from the namespace's newest snapshot (a resumed replay), or new."""
        await self.trainers.restore_all()

    async def tracking(self, partitions: int) -> ModelTracking:
        """The tracking a chunk's fold calls, with every partition's watermark."""
        batch = await self.stage.prepare(range(partitions))
        return batch.tracking

    async def after_chunk(
        self, fold: BatchFold, tracking: ModelTracking, seq: int, profiles: ProfileStore
    ) -> PipelineOps:
        """The chunk that started at record sequence ``seq`` was folded: move the watermarks, learn what that
        releases, publish the models that learned; returns the writes to make with the chunk's profiles."""
        self.newest_ms = max(
            [self.newest_ms, *(s.last_event_ms for s in fold.states.values() if s.last_event_ms is not None)]
        )
        target = self.newest_ms - self.stage.lag_ms
        examples, ops = await self.stage.release(fold, tracking, dict.fromkeys(tracking.watermarks, target), profiles)
        for i, example in enumerate(examples):
            self.trainers.learn_example(seq * POSITIONS + i, example)
        self.learned += len(examples)
        await self.trainers.snapshot_due(force=True)
        return ops

    async def hand_over(self, examples_end: int) -> None:
        """The replay is complete: each trained model once more, resuming at ``examples_end`` (the end of
        ``models.examples`` now), where the namespace's live trainer will continue after the hand-over."""
        for name, trainer in self.trainers.trainers.items():
            if trainer.examples_seen:
                self.trainers.resume_at[name] = examples_end
                self.trainers.unsaved[name] = max(1, self.trainers.unsaved[name])
        await self.trainers.snapshot_due(force=True)
