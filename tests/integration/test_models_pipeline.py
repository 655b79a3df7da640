"""The models end to end: simulator history → Kafka → worker (snapshots, delayed labels by event-time
watermark) → ``models.examples`` → trainer → scores served; and ``replay --retrain`` over the same topics.

The labels are checked against an independent oracle: for every example, the outcome recomputed from the
simulator's valid events (deduplicated by event id, visitors mapped to the customer they identified as)
inside the example's horizon. Late lines are switched off and the watermark lag is long, so that every
outcome event arrives before the watermark passes its horizon (docs/models.md says why that matters).
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from profiles.models.labels import Example, decode_example
from profiles.money import to_cents
from profiles.pending_store import PendingStore
from profiles.store import ProfileStore
from schemas.validation import Rejection, ValidationLimits, validate_event
from services.kafka_clients import make_consumer, topic_partitions
from services.redis_client import make_redis
from services.settings import Settings
from tests.kafka_support import Topics, created_topics, produce_raw, rapport
from tests.model_support import replayed_examples
from tests.worker_support import Worker, wait_until_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
DAY_MS = 86_400_000
ACTIVITY = {"click", "identify", "social_mention"}


def test_worker_examples_have_the_oracle_labels_and_train_served_models(
    settings: Settings, local_stack: object, tmp_path: Path
) -> None:
    prefix = f"{settings.kafka.topic_prefix}pipeline-{uuid.uuid4().hex[:6]}."
    own = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})})
    namespace = f"p{uuid.uuid4().hex[:8]}"
    path = tmp_path / "events.jsonl"
    sim = rapport(
        "simulate", "--customers", "300", "--days", "50", "--seed", "4", "--late-rate", "0", "--out", str(path),
        env={},
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    env_extra = {
        "RAPPORT_MODELS__WATERMARK_LAG_S": str(10 * 86_400),
        "RAPPORT_MODELS__SECRET": "pipeline-secret",
        "RAPPORT_MODELS__MIN_EXAMPLES": "50",
        "RAPPORT_MODELS__SNAPSHOT_EVERY_S": "0.5",
        "RAPPORT_MODELS__IDLE_PARTITION_S": "1",
    }
    with created_topics(own) as topics:
        produce_raw(topics, lines)
        worker = Worker(topics, namespace, tmp_path, env_extra)
        worker.start()
        try:
            wait_until_caught_up(topics, namespace, worker)
            # Then the raw partitions fall idle and the watermark reaches the newest event time minus the lag.
            examples = _stable(lambda: _examples(topics), lambda: _progress_report(topics, namespace))
        finally:
            worker.stop()
        by_model = defaultdict(list)
        for example in examples:
            by_model[example.model].append(example)
        assert len(by_model["purchase_propensity"]) > 200, {m: len(v) for m, v in by_model.items()}
        assert by_model["email_open"], {m: len(v) for m, v in by_model.items()}
        # A batch retried after its examples were sent sends them again: copies must be identical.
        distinct = {e.example_id: e for e in examples}
        differ = [(distinct[e.example_id], e) for e in examples if distinct[e.example_id] != e]
        assert not differ, [
            (a.example_id, a.label, b.label, a.label_known_ms, b.label_known_ms,
             sorted(k for k in a.features if a.features[k] != b.features.get(k)))
            for a, b in differ[:5]
        ]  # fmt: skip
        examples = list(distinct.values())

        oracle = _Oracle(lines, settings)
        wrong = [e for e in examples if e.label != oracle.label(e)]
        summary = sorted({(e.model, e.trigger, e.label, oracle.label(e)) for e in wrong})
        assert not wrong, f"{len(wrong)} of {len(examples)} labels differ: {summary[:20]}; e.g. {wrong[:1]}"
        assert all(e.taken_at_ms < e.label_known_ms <= e.horizon_end_ms for e in examples)
        assert {e.trigger for e in by_model["purchase_propensity"]} == {"activity", "census"}

        # `replay --retrain` over the same topics, read in another order (merged by record time, where the
        # worker caught up on five topics unevenly): the same examples, features and labels as live.
        replayed = asyncio.run(replayed_examples(topics.settings, lag_s=10 * 86_400, secret="pipeline-secret"))
        assert len(replayed) == len({e.example_id for e in replayed})
        _assert_same_examples(examples, replayed)

        env = {**topics.env, **env_extra, "RAPPORT_PROFILE__NAMESPACE": namespace}
        customer = max(by_model["purchase_propensity"], key=lambda e: e.taken_at_ms).profile_id
        _train_and_score(env, tmp_path, customer)


def _assert_same_examples(live: list[Example], replayed: list[Example]) -> None:
    """Same ids, labels, instants and features. A feature may differ in its last bit (of the float32 it is
    stored as): a visitor's affinity handed over in one block is summed in another order than the same
    clicks folded one by one, and two float64 sums a bit apart can round to neighbouring float32s."""
    by_id = {e.example_id: e for e in replayed}
    only_live = [e.example_id for e in live if e.example_id not in by_id]
    only_replay = sorted(set(by_id) - {e.example_id for e in live})
    differ = [(e, by_id[e.example_id]) for e in live if e.example_id in by_id and not _same(e, by_id[e.example_id])]
    summary = (
        f"of {len(live)} live and {len(replayed)} replayed examples: {len(only_live)} only live "
        f"{only_live[:3]}, {len(only_replay)} only replayed {only_replay[:3]}, {len(differ)} differ {differ[:2]}"
    )
    assert not only_live, summary
    assert not only_replay, summary
    assert not differ, summary


def _same(a: Example, b: Example) -> bool:
    if msgspec.structs.replace(a, features={}) != msgspec.structs.replace(b, features={}):
        return False
    if a.features.keys() != b.features.keys():
        return False
    return all(math.isclose(v, b.features[k], rel_tol=2.0**-23) for k, v in a.features.items())


def _stable(read: Any, describe: Any, quiet_s: float = 3.0, timeout_s: float = 60.0) -> list[Example]:
    """What ``read()`` returns once it has stopped growing for ``quiet_s``; ``describe()`` explains a timeout."""
    deadline = time.monotonic() + timeout_s
    found, since = read(), time.monotonic()
    while not found or time.monotonic() - since < quiet_s:  # nothing yet is not "stopped growing"
        if time.monotonic() >= deadline:
            pytest.fail(("models.examples kept growing" if found else "no example was released") + f"; {describe()}")
        time.sleep(0.5)
        again = read()
        if len(again) != len(found):
            found, since = again, time.monotonic()
    return list(found)


def _progress_report(topics: Topics, namespace: str) -> str:
    """What the models' event-time watermark waits for, per events.resolved partition: whether everything
    sent there was applied (Redis position against the topic's end), how many raw partitions its progress
    markers counted as idle, and which partitions announced their bound."""
    consumer = make_consumer(topics.settings, "test-progress")
    try:
        tps = topic_partitions(consumer, topics.names["events.resolved"])
        ends = consumer.end_offsets(tps)
    finally:
        consumer.close()
    return asyncio.run(_progress_in_redis(topics, namespace, {tp.partition: end for tp, end in ends.items()}))


async def _progress_in_redis(topics: Topics, namespace: str, ends: dict[int, int]) -> str:
    redis = make_redis(topics.settings)
    try:
        positions = await ProfileStore(redis, namespace).positions(topics.names["events.resolved"], list(ends))
        pending = PendingStore(redis, namespace)
        watermarks, progress = await pending.load(sorted(ends))
    finally:
        await redis.aclose()
    return "; ".join(
        f"p{p}: applied {positions.get(p)} of {end}, raw idle {sum(i for _, i in progress[p].raw.values())}"
        f"/{len(progress[p].raw)}, upstream {sorted(progress[p].upstream)}, watermark {watermarks.get(p)}"
        for p, end in sorted(ends.items())
    )


def _examples(topics: Topics) -> list[Example]:
    # Everything up to the ends as of now; the worker may still be adding more (``_stable`` waits that out).
    return [decode_example(r.value) for r in topics.read_to_end(["models.examples"])]


class _Oracle:
    """Outcomes recomputed from the simulator's lines, independently of the worker."""

    def __init__(self, lines: list[bytes], settings: Settings) -> None:
        now, limits = datetime.now(UTC), ValidationLimits()
        valid = [orjson.loads(v) for v in lines if not isinstance(validate_event(v, now=now, limits=limits), Rejection)]
        owner: dict[str, str] = {}
        for e in valid:  # first claim wins, in arrival order
            if e["type"] == "identify" and e.get("anonymous_id"):
                owner.setdefault(e["anonymous_id"], e["customer_id"])
        self.config = settings.profile.fold_config()
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        seen: set[str] = set()
        for e in valid:
            if e["event_id"] in seen:
                continue
            seen.add(e["event_id"])
            who = e.get("customer_id") or owner.get(e.get("anonymous_id") or "")
            if who:
                e["ms"] = int(datetime.fromisoformat(e["timestamp"]).timestamp() * 1000)
                self.events[who].append(e)

    def label(self, example: Example) -> float:
        window = [e for e in self.events[example.profile_id] if example.taken_at_ms < e["ms"] <= example.horizon_end_ms]
        if example.model == "purchase_propensity":
            return float(any(e["type"] == "purchase" and e["action"] == "order" for e in window))
        if example.model == "churn_risk":
            return float(not any(_active(e) for e in window))
        if example.model == "clv_90d":
            cents = sum(
                (1 if e["action"] == "order" else -1) * to_cents(e["total"], e["currency"], self.config)
                for e in window
                if e["type"] == "purchase"
            )
            return max(0, cents) / 100
        message = example.example_id.split("|")[-1]
        return float(
            any(
                e["type"] == "email" and e["action"] in ("opened", "clicked") and e.get("message_id") == message
                for e in window
            )
        )


def _active(e: dict[str, Any]) -> bool:
    if e["type"] == "email":
        return bool(e["action"] in ("opened", "clicked"))
    if e["type"] == "purchase":
        return bool(e["action"] == "order")
    return e["type"] in ACTIVITY


def _train_and_score(env: dict[str, str], tmp_path: Path, customer: str) -> None:
    with (tmp_path / "trainer.log").open("wb") as log:
        trainer = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "trainer"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                got = rapport("scores", "get", customer, env=env)
                assert got.returncode == 0, got.stderr
                score = orjson.loads(got.stdout)["scores"]["purchase_propensity"]
                if not score["cold_start"]:
                    break
                assert time.monotonic() < deadline, f"no trained model served; log in {tmp_path / 'trainer.log'}"
                time.sleep(1.0)
            assert score["model_version"] is not None
            assert 0.0 <= score["value"] <= 1.0
        finally:
            trainer.terminate()
            trainer.wait(timeout=30)
