"""A trained, signed model published into a namespace, for tests of what reads served models."""

from __future__ import annotations

import time

from profiles.config import FoldConfig
from profiles.features import features
from profiles.model_store import ModelStore
from profiles.models.labels import Example
from profiles.models.snapshots import dump_snapshot
from profiles.models.specs import CHURN_RISK, default_specs
from profiles.models.trainer import ModelTrainer
from profiles.state import ProfileState
from services.redis_client import make_redis
from services.settings import Settings


async def publish_churn_model(settings: Settings, namespace: str, label: float, secret: str) -> int:
    """A churn model that learned ``label`` for 200 examples (past its cold start), signed and made active;
    returns its version."""
    trainer = ModelTrainer(default_specs(min_examples=50)[CHURN_RISK])
    x = features(ProfileState(profile_id="p"), 0, FoldConfig())
    for n in range(200):
        example = Example(
            example_id=str(n), model=CHURN_RISK, profile_id="p", trigger="census", taken_at_ms=0,
            horizon_end_ms=0, label_known_ms=0, features=x, label=label,
        )  # fmt: skip
        trainer.learn(example)
    redis = make_redis(settings)
    try:
        store = ModelStore(redis, namespace)
        version = await store.next_version(CHURN_RISK)
        blob = dump_snapshot(trainer.snapshot_meta(version, int(time.time() * 1000)), trainer, secret.encode())
        await store.publish(CHURN_RISK, version, blob, keep=5)
        return version
    finally:
        await redis.aclose()
