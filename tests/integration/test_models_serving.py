"""The trainer and the scoring read model against the real broker, Redis and API process.

Profiles come from a replayed simulator history; labelled examples are produced to ``models.examples``
with those profiles' real features 0 to 30 days after their last event and a label that depends on the
recency (recent customers buy), so a trained model must rank them better than the cold-start heuristic's
flat answer for equal inputs. This covers the trainer, the signed snapshots, hot reload, tampering,
rollback and the score routes; the worker's own examples are test_models_pipeline.py's.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import TopicPartition

from deploy.localstack import RedisNode
from profiles.features import features
from profiles.model_store import ModelStore
from profiles.models.labels import NAMESPACE_HEADER, Example, encode_example
from profiles.models.snapshots import load_snapshot, read_meta
from profiles.models.specs import PURCHASE_PROPENSITY, ModelSpec
from profiles.models.trainer import ModelTrainer, restore
from profiles.state import ProfileState
from profiles.store import ProfileStore
from services.kafka_clients import make_producer
from services.redis_client import make_redis
from services.settings import Settings
from streams.trainer import trainer_group
from tests.api_support import create_key, running_api
from tests.kafka_support import Topics, committed_offsets, created_topics, private_kafka, produce_raw, rapport
from tests.redis_support import private_redis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
SECRET = "test-secret-0123456789"
RELOAD_S = 1.0


def test_trainer_snapshots_are_served_hot_reloaded_refused_when_tampered_and_rolled_back(
    settings: Settings, local_stack: object, tmp_path: Path
) -> None:
    prefix = f"{settings.kafka.topic_prefix}models-{uuid.uuid4().hex[:6]}."
    own = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})})
    namespace = f"m{uuid.uuid4().hex[:8]}"
    with created_topics(own) as topics:
        env = {
            **topics.env,
            "RAPPORT_PROFILE__NAMESPACE": namespace,
            "RAPPORT_MODELS__SECRET": SECRET,
            "RAPPORT_MODELS__MIN_EXAMPLES": "200",
            "RAPPORT_MODELS__SNAPSHOT_EVERY_EXAMPLES": "1000000",
            "RAPPORT_MODELS__SNAPSHOT_EVERY_S": "0.5",
            "RAPPORT_MODELS__RELOAD_S": str(RELOAD_S),
            "RAPPORT_MODELS__KEEP_VERSIONS": "50",
            "RAPPORT_API__KEY_CACHE_S": "0",
        }
        no_secret = rapport("trainer", env={**env, "RAPPORT_MODELS__SECRET": ""})
        assert no_secret.returncode == 2
        assert "RAPPORT_MODELS__SECRET" in no_secret.stderr

        profiles, last_event = _profiles(topics, namespace, tmp_path)
        ids = sorted(profiles)
        key = create_key(env, "--name", "scores", "--scopes", "scores:read", "--rate-limit", "10000")
        with running_api(env, tmp_path / "api.log") as base, _trainer(env, tmp_path / "trainer.log") as trainer:
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10)
            before = api.get(f"/v1/profiles/{ids[0]}/scores").json()
            assert before["scores"][PURCHASE_PROPENSITY]["cold_start"] is True
            assert before["scores"][PURCHASE_PROPENSITY]["model_version"] is None

            # Another namespace's worker shares the topic: its examples are not learned (600, not 650).
            _produce_examples(topics, profiles, 50, seed=99, sender="another-namespace")
            _produce_examples(topics, profiles, 600, seed=1, sender=namespace)
            store = _store(topics, namespace)
            first = _wait_for(lambda: _active_having(topics, namespace, 600), 60)
            served_after = _served_within(api, ids[0], first)
            assert served_after <= 5.0, f"v{first} served {served_after:.1f} s after it became active"
            scored = api.get(f"/v1/profiles/{ids[0]}/scores").json()["scores"][PURCHASE_PROPENSITY]
            assert scored["cold_start"] is False
            assert 0.0 <= scored["value"] <= 1.0
            # /metrics shows what is served, and how the model fares beside its baselines.
            exposed = api.get("/metrics").text
            assert f'rapport_model_version{{model="{PURCHASE_PROPENSITY}"}} {float(first)}' in exposed, exposed
            assert f'rapport_model_cold_start{{model="{PURCHASE_PROPENSITY}"}} 0.0' in exposed
            for predictor in ("model", "recency", "base_rate"):
                labels = f'metric="roc_auc",model="{PURCHASE_PROPENSITY}",predictor="{predictor}"'  # sorted
                metric = f"rapport_model_metric{{{labels}}}"
                assert metric in exposed, (metric, exposed)

            # The model learned the signal: one customer scores higher a day after its last event than 20 days
            # after; and the batch route answers per id.
            day_ms = 86_400_000
            for pid in ids[:10]:
                last = last_event[pid]
                soon = api.get(f"/v1/profiles/{pid}/scores", params={"as_of": _iso(last + day_ms)}).json()
                late = api.get(f"/v1/profiles/{pid}/scores", params={"as_of": _iso(last + 20 * day_ms)}).json()
                p_soon = soon["scores"][PURCHASE_PROPENSITY]["value"]
                p_late = late["scores"][PURCHASE_PROPENSITY]["value"]
                assert p_soon > p_late, (pid, p_soon, p_late)
            batch = api.post("/v1/scores/batch", json={"ids": [ids[0], "nobody-at-all"]}).json()["results"]
            assert batch[0]["status"] == "found"
            assert batch[0]["result"]["profile_id"] == ids[0]
            assert batch[1] == {"id": "nobody-at-all", "status": "not_found", "result": None, "error": None}
            early = api.get(f"/v1/profiles/{ids[0]}/scores", params={"as_of": _iso(last_event[ids[0]] - day_ms)})
            assert early.status_code == 422
            assert early.json()["error"]["code"] == "as_of_before_last_event"

            # A newer version is picked up within 5 s.
            _produce_examples(topics, profiles, 300, seed=2)
            second = _wait_for(lambda: _active_having(topics, namespace, 900), 60)
            assert _served_within(api, ids[0], second) <= 5.0

            # A tampered snapshot made active is refused: the API keeps serving what it had.
            blob = asyncio.run(store("snapshot", PURCHASE_PROPENSITY, second))
            assert blob is not None
            forged = bytearray(blob)
            forged[-1] ^= 0x01
            asyncio.run(store("publish", PURCHASE_PROPENSITY, 999_999, bytes(forged), 10))
            time.sleep(RELOAD_S * 3)
            assert _version(api, ids[0]) == second
            listing = rapport("models", "list", env=env)
            assert "REFUSED" in listing.stdout, listing.stdout

            # Rollback pins an older kept version; release serves the newest again.
            rolled = rapport("models", "rollback", PURCHASE_PROPENSITY, str(first), env=env)
            assert rolled.returncode == 0, rolled.stderr
            assert _served_within(api, ids[0], first) <= 5.0
            assert rapport("models", "rollback", PURCHASE_PROPENSITY, "424242", env=env).returncode == 1
            asyncio.run(store("hdel_forged", PURCHASE_PROPENSITY, 999_999))
            assert rapport("models", "release", PURCHASE_PROPENSITY, env=env).returncode == 0
            assert _served_within(api, ids[0], second) <= 5.0
            assert trainer.poll() is None, "the trainer kept running"

        # A restarted trainer resumes from its snapshots: versions go on, examples are not learned twice.
        with _trainer(env, tmp_path / "trainer2.log"):
            _produce_examples(topics, profiles, 100, seed=3)
            third_version = _wait_for(lambda: _active_having(topics, namespace, 1000), 60)
        assert third_version > second
        time.sleep(1.0)
        assert _active_having(topics, namespace, 1000) == third_version, "nothing learned twice after the restart"
        scores_cli = rapport("scores", "get", ids[0], env=env)
        assert scores_cli.returncode == 0, scores_cli.stderr
        assert f'"model_version": {third_version}' in scores_cli.stdout


def _profiles(topics: Topics, namespace: str, tmp_path: Path) -> tuple[dict[str, ProfileState], dict[str, int]]:
    """A small replayed history: each customer's profile, and the time of its last event."""
    path = tmp_path / "events.jsonl"
    sim = rapport("simulate", "--customers", "150", "--days", "20", "--seed", "9", "--out", str(path), env={})
    assert sim.returncode == 0, sim.stderr
    produce_raw(topics, [line for line in path.read_bytes().splitlines() if line.strip()])
    replayed = rapport("replay", "--into", namespace, "--quiet", env={**topics.env})
    assert replayed.returncode == 0, replayed.stderr

    async def read() -> tuple[dict[str, ProfileState], dict[str, int]]:
        redis = make_redis(topics.settings)
        try:
            out, last = {}, {}
            async for batch in ProfileStore(redis, namespace).scan_profiles():
                for pid, stored in batch.items():
                    state = stored.state
                    if state and state.merged_into is None and state.customer_id:
                        out[pid] = state
                        last[pid] = state.last_event_ms or 0
            return out, last
        finally:
            await redis.aclose()

    found, last = asyncio.run(read())
    assert len(found) > 60
    return found, last


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _produce_examples(
    topics: Topics, profiles: dict[str, ProfileState], n: int, seed: int, sender: str | None = None
) -> list[Example]:
    """``n`` examples of purchase propensity: a customer's features 0 to 30 days after its last event, and
    a label saying that customers quiet for less than 3 days buy (mostly); ``sender``: the namespace header
    a worker puts on them (None: none, as records older than the header). Returns what was sent."""
    rng = random.Random(seed)
    config = topics.settings.profile.fold_config()
    examples = []
    for i in range(n):
        pid = rng.choice(sorted(profiles))
        state = profiles[pid]
        x = features(state, (state.last_event_ms or 0) + int(rng.uniform(0, 30) * 86_400_000), config)
        label = 1.0 if (x["days_since_last_seen"] < 3) != (rng.random() < 0.05) else 0.0
        examples.append(_example(f"{seed}-{i}", pid, i, x, label))
    _send(topics, examples, sender)
    return examples


def _example(example_id: str, profile_id: str, at: int, x: dict[str, float], label: float) -> Example:
    return Example(
        example_id=example_id,
        model=PURCHASE_PROPENSITY,
        profile_id=profile_id,
        trigger="activity",
        taken_at_ms=at,
        horizon_end_ms=at + 1,
        label_known_ms=at + 1,
        features=x,
        label=label,
    )


def _send(topics: Topics, examples: list[Example], sender: str | None = None) -> None:
    headers = [] if sender is None else [(NAMESPACE_HEADER, sender.encode())]
    producer = make_producer(topics.settings)
    try:
        for example in examples:
            producer.send(
                topics.names["models.examples"],
                key=PURCHASE_PROPENSITY.encode(),
                value=encode_example(example),
                headers=headers,
            )
        producer.flush()
    finally:
        producer.close()


@contextmanager
def _trainer(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "trainer"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()  # no test leaves a trainer behind
                proc.wait()
                raise


def _store(topics: Topics, namespace: str) -> Any:
    """A call on a fresh ``ModelStore`` (each in its own event loop, as the test is synchronous)."""

    async def call(method: str, *args: Any) -> Any:
        redis = make_redis(topics.settings)
        try:
            store = ModelStore(redis, namespace)
            if method == "hdel_forged":
                return await redis.hdel(store._key(args[0], "v"), str(args[1]))
            return await getattr(store, method)(*args)
        finally:
            await redis.aclose()

    return call


def _wait_for(probe: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s")


def _version(api: httpx.Client, profile_id: str) -> int | None:
    answer = api.get(f"/v1/profiles/{profile_id}/scores")
    assert answer.status_code == 200, answer.text
    version: int | None = answer.json()["scores"][PURCHASE_PROPENSITY]["model_version"]
    return version


def _served_within(api: httpx.Client, profile_id: str, version: int) -> float:
    """Seconds until the API serves ``version`` (already active in Redis)."""
    started = time.monotonic()
    _wait_for(lambda: _version(api, profile_id) == version, 10)
    return time.monotonic() - started


def _active_having(topics: Topics, namespace: str, examples: int) -> int | None:
    """The active version if it has learned exactly ``examples`` examples (None otherwise)."""

    async def read() -> int | None:
        redis = make_redis(topics.settings)
        try:
            store = ModelStore(redis, namespace)
            version = await store.active_version(PURCHASE_PROPENSITY)
            blob = None if version is None else await store.snapshot(PURCHASE_PROPENSITY, version)
            if blob is None or read_meta(blob, SECRET.encode()).examples_seen != examples:
                return None
            return version
        finally:
            await redis.aclose()

    return asyncio.run(read())


@dataclass(frozen=True)
class Outage:
    """A trainer's world of its own: topics, a Redis it may kill, its namespace and environment."""

    redis: RedisNode
    topics: Topics
    namespace: str
    env: dict[str, str]
    examples: dict[str, ProfileState]  # whose features the examples carry


@contextmanager
def _outage_world(settings: Settings, tmp_path: Path, **extra_env: str) -> Iterator[Outage]:
    prefix = f"{settings.kafka.topic_prefix}outage-{uuid.uuid4().hex[:6]}."
    own = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})})
    namespace = f"m{uuid.uuid4().hex[:8]}"
    with created_topics(own) as shared, private_redis(shared, tmp_path) as (redis, topics):
        env = {
            **topics.env,
            "RAPPORT_PROFILE__NAMESPACE": namespace,
            "RAPPORT_MODELS__SECRET": SECRET,
            "RAPPORT_MODELS__SNAPSHOT_EVERY_S": "0.5",
            **extra_env,
        }
        customer = ProfileState(profile_id="c-1", customer_id="c-1", last_event_ms=0)
        yield Outage(redis, topics, namespace, env, {"c-1": customer})


def test_a_trainer_waits_out_a_redis_outage_and_loses_no_example(
    settings: Settings, local_stack: object, tmp_path: Path
) -> None:
    """Redis killed while the trainer has examples to snapshot: it keeps running (and its liveness file
    fresh), retries, and once Redis is back from its AOF publishes a version that learned every example."""
    alive = tmp_path / "alive"
    with _outage_world(settings, tmp_path, RAPPORT_STREAM__LIVENESS_FILE=str(alive)) as world:
        topics, namespace = world.topics, world.namespace
        with _trainer(world.env, tmp_path / "trainer.log") as trainer:
            _produce_examples(topics, world.examples, 300, seed=1)
            before = _wait_for(lambda: _active_having(topics, namespace, 300), 60)
            time.sleep(1.5)  # past appendfsync everysec: the snapshot is in the AOF
            world.redis.kill()
            _produce_examples(topics, world.examples, 300, seed=2)
            for _ in range(8):
                time.sleep(1.0)
                assert trainer.poll() is None, "the trainer exited on the outage"
                assert time.time() - alive.stat().st_mtime < 7, "the trainer looked hung during the outage"
            world.redis.start()
            after = _wait_for(lambda: _active_having(topics, namespace, 600), 60)
            assert trainer.poll() is None
        assert after > before
        assert "saving paused" in (tmp_path / "trainer.log").read_text()


def test_a_trainer_waits_out_a_kafka_outage_stops_cleanly_during_it_and_loses_no_example(
    settings: Settings, local_stack: object, tmp_path: Path
) -> None:
    """The broker (of this test alone) SIGKILLed once the trainer has published what it learned: it keeps
    running; stopped during the outage, it exits at once and cleanly (before session 35, aiokafka's own
    CancelledError on stop killed it: ``services.kafka_clients.stop_consumer``); once the broker is back on
    its storage, a new trainer learns the examples sent afterwards, and no example twice."""
    with private_kafka(settings, tmp_path) as (kafka, topics):
        namespace = f"m{uuid.uuid4().hex[:8]}"
        env = {
            **topics.env,
            "RAPPORT_PROFILE__NAMESPACE": namespace,
            "RAPPORT_MODELS__SECRET": SECRET,
            "RAPPORT_MODELS__SNAPSHOT_EVERY_S": "0.5",
            "RAPPORT_KAFKA__COMMIT_TIMEOUT_S": "2",
        }
        profiles = {"c-1": ProfileState(profile_id="c-1", customer_id="c-1", last_event_ms=0)}
        log = tmp_path / "trainer.log"
        with _trainer(env, log) as trainer:
            _produce_examples(topics, profiles, 300, seed=1)
            _wait_for(lambda: _active_having(topics, namespace, 300), 60)
            kafka.kill()
            for _ in range(4):
                time.sleep(1.0)
                assert trainer.poll() is None, "the trainer exited on the outage: " + log.read_text()
            trainer.terminate()
            try:
                code = trainer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                raise AssertionError("still running 10 s after SIGTERM during the outage") from None
            assert code == 0, "not stopped cleanly during the outage: " + log.read_text()
        kafka.start()
        with _trainer(env, tmp_path / "trainer-again.log") as trainer:
            _produce_examples(topics, profiles, 300, seed=2)
            _wait_for(lambda: _active_having(topics, namespace, 600), 60)
            assert trainer.poll() is None
    assert "Traceback" not in log.read_text(), log.read_text()


def test_a_trainer_started_while_redis_is_down_waits_and_learns_everything(
    settings: Settings, local_stack: object, tmp_path: Path
) -> None:
    """Assigned its partition while Redis is down, the trainer cannot read its snapshots: it waits (learning
    nothing it could not resume from), and once Redis is up learns every example sent meanwhile."""
    with _outage_world(settings, tmp_path) as world:
        world.redis.kill()
        with _trainer(world.env, tmp_path / "trainer.log") as trainer:
            _produce_examples(world.topics, world.examples, 300, seed=1)
            time.sleep(8.0)  # assigned, and restoring in vain
            assert trainer.poll() is None, "the trainer exited"
            world.redis.start()
            _wait_for(lambda: _active_having(world.topics, world.namespace, 300), 60)
            assert trainer.poll() is None
        assert "restoring the models paused" in (tmp_path / "trainer.log").read_text()


def test_a_trainer_skips_examples_its_model_must_not_learn_and_stays_finite(
    settings: Settings, local_stack: object, tmp_path: Path
) -> None:
    """Examples with a NaN or infinite feature, a label a binary model cannot have, or no recency feature,
    between good ones: each is skipped with its reason in the log, and the model learns the good ones with
    finite metrics. (Before 2026-12-05 one NaN feature made the model predict NaN from then on.) So is a valid
    example whose learning raises (a defect injected by ``tests/fault_injection``), which used to stop the
    trainer, and every restarted one at the same example."""
    injection = str(Path(__file__).resolve().parents[1] / "fault_injection")
    path = os.pathsep.join(filter(None, [injection, os.environ.get("PYTHONPATH")]))
    fault = {"PYTHONPATH": path, "RAPPORT_TEST_UNLEARNABLE_EXAMPLE": "defect"}
    with _outage_world(settings, tmp_path) as world:
        topics, namespace = world.topics, world.namespace
        x = features(world.examples["c-1"], 86_400_000, topics.settings.profile.fold_config())
        poisoned = [
            _example("nan", "c-1", 0, {**x, "sessions": float("nan")}, 1.0),
            _example("inf", "c-1", 0, {**x, "monetary": float("inf")}, 0.0),
            _example("half", "c-1", 0, x, 0.5),
            _example("no-recency", "c-1", 0, {k: v for k, v in x.items() if k != "days_since_last_seen"}, 1.0),
            _example("defect", "c-1", 0, x, 1.0),
        ]
        with _trainer({**world.env, **fault}, tmp_path / "trainer.log") as trainer:
            _produce_examples(topics, world.examples, 300, seed=1)
            _send(topics, poisoned)
            _produce_examples(topics, world.examples, 300, seed=2)
            version = _wait_for(lambda: _active_having(topics, namespace, 600), 60)
            assert trainer.poll() is None
        blob = asyncio.run(_store(topics, namespace)("snapshot", PURCHASE_PROPENSITY, version))
        metrics = read_meta(blob, SECRET.encode()).metrics
        assert metrics["roc_auc"] is not None, metrics
        assert all(v is None or math.isfinite(v) for v in metrics.values()), metrics
        log = (tmp_path / "trainer.log").read_text()
        for example_id in ("nan", "inf", "half", "no-recency"):
            assert f"skipping {PURCHASE_PROPENSITY} example {example_id} at offset" in log, example_id
        assert f"learning {PURCHASE_PROPENSITY} example defect at offset" in log
        assert "ZeroDivisionError: injected defect" in log


def test_a_trainer_killed_mid_run_resumes_from_its_snapshot_and_relearns_what_it_lost(
    settings: Settings, local_stack: object, tmp_path: Path
) -> None:
    """kill -9 with 150 examples learned since the last snapshot: the restarted trainer resumes from that
    snapshot, learns those 150 again (once), and its next version comes after the last one. The oracle is
    the same examples learned in one go, offline, by the trainer's own ``ModelTrainer``: the version after
    the kill must predict exactly as it does."""
    every = {"RAPPORT_MODELS__SNAPSHOT_EVERY_EXAMPLES": "300", "RAPPORT_MODELS__SNAPSHOT_EVERY_S": "3600"}
    with _outage_world(settings, tmp_path, **every) as world:
        topics, namespace = world.topics, world.namespace
        store = _store(topics, namespace)
        with _trainer(world.env, tmp_path / "trainer.log") as trainer:
            sent = _produce_examples(topics, world.examples, 300, seed=1)
            first = _wait_for(lambda: _active_having(topics, namespace, 300), 60)
            sent += _produce_examples(topics, world.examples, 150, seed=2)
            # Learning comes before the commit: 450 committed means the 150 were learned, and not saved.
            _wait_for(lambda: _trainer_committed(topics, namespace) == 450, 60)
            trainer.kill()
            trainer.wait(timeout=10)
        assert set(asyncio.run(store("snapshots", PURCHASE_PROPENSITY))) == {first}, "a version holds the 150"
        with _trainer(world.env, tmp_path / "trainer2.log") as trainer:
            sent += _produce_examples(topics, world.examples, 150, seed=3)
            second = _wait_for(lambda: _active_having(topics, namespace, 600), 60)
            assert trainer.poll() is None
        assert second > first
        kept = asyncio.run(store("snapshots", PURCHASE_PROPENSITY))
        seen = {version: read_meta(blob, SECRET.encode()).examples_seen for version, blob in kept.items()}
        assert seen == {first: 300, second: 600}

    served = restore(load_snapshot(kept[second], SECRET.encode()), _spec(topics))
    oracle = ModelTrainer(_spec(topics), window=topics.settings.models.metrics_window)
    for example in sent:
        oracle.learn(example)
    assert served.examples_seen == oracle.examples_seen == 600
    probes = [example.features for example in sent[::37]]
    assert [served.predict(x) for x in probes] == [oracle.predict(x) for x in probes]
    assert served.report() == oracle.report()
    assert f"{PURCHASE_PROPENSITY} resumes from v{first} (300 examples seen)" in (tmp_path / "trainer2.log").read_text()


def _spec(topics: Topics) -> ModelSpec:
    return topics.settings.models.specs()[PURCHASE_PROPENSITY]


def _trainer_committed(topics: Topics, namespace: str) -> int | None:
    """The trainer group's committed offset on ``models.examples`` (None: none yet)."""
    own = topics.settings.model_copy(
        update={"profile": topics.settings.profile.model_copy(update={"namespace": namespace})}
    )
    found = committed_offsets(topics.settings, trainer_group(own))
    tp = TopicPartition(topics.names["models.examples"], 0)
    return found[tp].offset if tp in found else None
