"""Helpers for tests that run the real profile worker: start it, wait for it to catch up, read profiles."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kafka import KafkaAdminClient, TopicPartition
from kafka.errors import KafkaError

from profiles.rfm import RfmRanks, RfmScores
from profiles.segment_store import SegmentStore
from profiles.state import ProfileState
from profiles.store import ProfileStore
from profiles.view import render
from schemas.topics import ERASURES, RAW_EVENT_TOPICS, RESOLVED
from services.kafka_clients import make_consumer, topic_partitions
from services.redis_client import make_redis
from services.settings import Settings
from tests.kafka_support import Topics, produce_raw


class Worker:
    """A `rapport worker` subprocess; its output goes to a log file for post-mortems."""

    def __init__(self, topics: Topics, namespace: str, log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.env = {**topics.env, "RAPPORT_PROFILE__NAMESPACE": namespace, **(extra_env or {})}
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"worker-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_lines(self) -> list[str]:
        """Every start's log, line by line, each line after its file's name."""
        return [
            f"{path.name}: {line}"
            for path in sorted(self.log_dir.glob("worker-*.log"))
            for line in path.read_text(errors="replace").splitlines()
        ]

    def troubles(self, limit: int = 60) -> str:
        """The warnings and errors of every start's log (retries, stale positions, rebalances): what a
        failed comparison needs to be explained after the test's temporary directory is gone."""
        lines = [line for line in self.log_lines() if " WARNING " in line or " ERROR " in line or "Traceback" in line]
        shown = lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])
        return "\n".join(shown) or "(no warnings or errors in the worker's logs)"


def define_segments(settings: Settings, namespace: str, rules: dict[str, str]) -> None:
    """Save segment definitions (name → rule) in ``namespace``, as ``PUT /v1/segments/{name}`` would."""

    async def save() -> None:
        redis = make_redis(settings)
        try:
            store = SegmentStore(redis, namespace)
            for name, rule in rules.items():
                await store.save(name, "", rule, now_ms=0)
        finally:
            await redis.aclose()

    asyncio.run(save())


def group_id(topics: Topics, namespace: str) -> str:
    return f"{topics.settings.kafka.topic_prefix}rapport-profiles-{namespace}"


def caught_up(topics: Topics, namespace: str) -> bool:
    """Raw topics fully committed by the worker's group and events.resolved fully applied (Redis positions)."""
    with CatchUpProbe(topics, namespace) as probe:
        return probe()


class CatchUpProbe:
    """``caught_up`` with its Kafka clients kept between checks: connecting them is most of a check's
    ~0.1 s, which matters to a benchmark that times when the worker caught up."""

    def __init__(self, topics: Topics, namespace: str) -> None:
        self.topics = topics
        self.namespace = namespace
        settings = topics.settings
        self.consumer = make_consumer(settings, "test-lag")
        self.admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        raw_topics = [topics.names[spec.name] for spec in (*RAW_EVENT_TOPICS, ERASURES)]
        self.raw = [tp for topic in raw_topics for tp in topic_partitions(self.consumer, topic)]
        self.resolved = topic_partitions(self.consumer, topics.names[RESOLVED.name])

    def __enter__(self) -> CatchUpProbe:
        return self

    def __exit__(self, *_: object) -> None:
        self.consumer.close()
        self.admin.close()

    def committed(self) -> dict[TopicPartition, int] | None:
        """The worker group's committed offsets on the raw partitions (None: the broker cannot say yet)."""
        group = group_id(self.topics, self.namespace)
        try:
            found = self.admin.list_group_offsets(group).get(group, {})
        except KafkaError as exc:
            # A freshly started broker creates its offsets topic on first use.
            if exc.retriable:
                return None
            raise
        return {tp: found[tp].offset for tp in self.raw if tp in found}

    def __call__(self) -> bool:
        ends = self.consumer.end_offsets(self.raw + self.resolved)
        committed = self.committed()
        if committed is None:
            return False
        if any(ends[tp] and committed.get(tp, -1) < ends[tp] for tp in self.raw):
            return False
        positions = asyncio.run(_positions(self.topics, self.namespace, [tp.partition for tp in self.resolved]))
        return all(positions.get(tp.partition, 0) >= ends[tp] for tp in self.resolved)


async def _positions(topics: Topics, namespace: str, partitions: list[int]) -> dict[int, int]:
    redis = make_redis(topics.settings)
    try:
        return await ProfileStore(redis, namespace).positions(topics.names[RESOLVED.name], partitions)
    finally:
        await redis.aclose()


def wait_until_caught_up(topics: Topics, namespace: str, worker: Worker, timeout_s: float = 300) -> None:
    """Until the worker has applied everything, in two checks half a second apart (a forward can still be
    in flight at the first)."""
    deadline = time.monotonic() + timeout_s
    streak = 0
    with CatchUpProbe(topics, namespace) as probe:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker did not catch up in {timeout_s} s; logs in {worker.log_dir}")
            if not worker.alive():
                raise RuntimeError(f"worker exited; logs in {worker.log_dir}")
            streak = streak + 1 if probe() else 0
            if streak == 2:
                return
            time.sleep(0.5)


def run_worker_through(
    topics: Topics, namespace: str, log_dir: Path, lines: Sequence[bytes] = (), extra_env: dict[str, str] | None = None
) -> None:
    """A worker started, ``lines`` sent straight to the raw topics (unvalidated: the worker validates on its
    own), and the worker stopped once it has applied everything the topics hold."""
    worker = Worker(topics, namespace, log_dir, extra_env)
    worker.start()
    try:
        assert produce_raw(topics, lines) == len(lines)
        wait_until_caught_up(topics, namespace, worker)
    finally:
        worker.stop()


def stored_views(topics: Topics, namespace: str, as_of_ms: int) -> dict[str, dict[str, object]]:
    """Every live profile of ``namespace`` rendered at ``as_of_ms`` with RFM ranks from Redis."""
    return asyncio.run(_views(topics, namespace, as_of_ms))


async def _views(topics: Topics, namespace: str, as_of_ms: int) -> dict[str, dict[str, object]]:
    settings = topics.settings
    redis = make_redis(settings)
    try:
        store = ProfileStore(redis, namespace)
        pattern = store.profile_key("*")
        ids = [key.decode().split(":p:{", 1)[1][:-1] async for key in redis.scan_iter(match=pattern, count=1000)]
        loaded = await store.load(ids)
        config = settings.profile.fold_config()
        out = {}
        for pid, stored in loaded.items():
            state: ProfileState | None = stored.state
            if state is None or state.merged_into is not None:
                continue
            out[pid] = render(
                state, as_of_ms, config, rfm=_scores(await store.rfm_ranks(state)), watermark=stored.watermark
            )
        return out
    finally:
        await redis.aclose()


def _scores(ranks: RfmRanks | None) -> RfmScores | None:
    return ranks.scores() if ranks is not None else None
