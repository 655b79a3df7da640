"""Models for tests: a trained, signed model published into a namespace (for what reads served models), and
the examples a retraining replay learns."""

from __future__ import annotations

import time
import uuid

from pydantic import SecretStr

from profiles.config import FoldConfig
from profiles.features import features
from profiles.model_store import ModelStore
from profiles.models.labels import Example
from profiles.models.snapshots import dump_snapshot
from profiles.models.specs import CHURN_RISK, default_specs
from profiles.models.trainer import ModelTrainer
from profiles.namespaces import Namespaces
from profiles.state import ProfileState
from profiles.store import ProfileStore
from services.redis_client import make_redis
from services.settings import Settings
from streams.replay import Replay, raw_topics
from streams.replay_models import ReplayModels


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


async def replayed_examples(settings: Settings, *, lag_s: float, secret: str, chunk: int = 2_000) -> list[Example]:
    """The examples ``rapport replay --retrain`` learns from the raw topics of ``settings`` into a fresh
    namespace (run in this process, so that they can be looked at; the trainers learn them as they would)."""
    models = settings.models.model_copy(update={"watermark_lag_s": lag_s, "secret": SecretStr(secret)})
    own = settings.model_copy(update={"models": models})
    namespace = f"p{uuid.uuid4().hex[:8]}"
    redis = make_redis(own)
    try:
        retrain = ReplayModels(own, redis, namespace, own.profile.fold_config())
        learned: list[Example] = []
        learn = retrain.trainers.learn_example

        def spy(offset: int, example: Example) -> None:
            learned.append(example)
            learn(offset, example)

        retrain.trainers.learn_example = spy  # type: ignore[method-assign]
        async with Replay(own, ProfileStore(redis, namespace), Namespaces(redis), chunk, models=retrain) as runner:
            await runner.run(await runner.plan(raw_topics(own, None), None, None))
    finally:
        await redis.aclose()
    return learned
