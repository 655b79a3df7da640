"""The profile worker survives crashes, rebalances, a Redis crash and a Kafka broker crash with exact profiles.

One simulated history of more than 200,000 events (duplicates, late and malformed events included) and
its oracle profiles are shared by the tests; each test runs it through its own topics and namespace and
compares every field of every profile with the oracle.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from profiles.config import HOUR_MS
from schemas.validation import Rejection, ValidationLimits, validate_event
from tests.api_support import stopped
from tests.kafka_support import Topics, private_kafka, produce_raw, rapport
from tests.oracle import OracleSettings, build_profiles, diff_profiles
from tests.redis_support import private_redis
from tests.worker_support import CatchUpProbe, Worker, caught_up, stored_views, wait_until_caught_up

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class History:
    lines: list[bytes]
    as_of_ms: int
    expected: dict[str, dict[str, object]]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    path = tmp_path_factory.mktemp("history") / "events.jsonl"
    sim = rapport("simulate", "--customers", "1400", "--days", "60", "--seed", "33", "--out", str(path), env={})
    assert sim.returncode == 0, sim.stderr
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    assert len(lines) >= 200_000
    now, limits = datetime.now(UTC), ValidationLimits()
    valid = [orjson.loads(v) for v in lines if not isinstance(validate_event(v, now=now, limits=limits), Rejection)]
    latest = max(int(datetime.fromisoformat(e["timestamp"]).timestamp() * 1000) for e in valid)
    as_of = (-(-latest // HOUR_MS) + 1) * HOUR_MS
    return History(lines, as_of, build_profiles(valid, as_of_ms=as_of, settings=OracleSettings()))


def run_with_faults(
    topics: Topics,
    history: History,
    tmp_path: Path,
    workers: int,
    fault: Callable[[list[Worker], int], None],
    faults: int,
) -> str:
    """Produce the history while ``faults`` faults are injected at random moments; then wait for the
    survivors to catch up and return the namespace."""
    namespace = f"t{uuid.uuid4().hex[:8]}"
    group = [Worker(topics, namespace, tmp_path / f"w{i}") for i in range(workers)]
    for i, worker in enumerate(group):
        (tmp_path / f"w{i}").mkdir()
        worker.start()
    rng = random.Random(7)
    # Faults land while events are still being produced and processed, not after.
    producer = threading.Thread(target=produce_raw, args=(topics, history.lines))
    producer.start()
    try:
        for n in range(faults):
            time.sleep(rng.uniform(1.0, 4.0))
            if caught_up(topics, namespace):
                raise AssertionError(f"the run finished before fault {n + 1}: make the history longer")
            fault(group, n)
        producer.join()
        for worker in group:
            wait_until_caught_up(topics, namespace, worker)
    finally:
        producer.join()
        for worker in group:
            worker.stop()
    return namespace


def assert_exact(topics: Topics, namespace: str, history: History) -> None:
    diffs = diff_profiles(history.expected, stored_views(topics, namespace, history.as_of_ms))
    assert not diffs, f"{len(diffs)} differences:\n" + "\n".join(diffs[:40])


def test_worker_killed_five_times_mid_run(topics: Topics, history: History, tmp_path: Path) -> None:
    def kill_and_restart(group: list[Worker], _: int) -> None:
        group[0].kill()
        group[0].start()

    namespace = run_with_faults(topics, history, tmp_path, workers=1, fault=kill_and_restart, faults=5)
    assert_exact(topics, namespace, history)


def test_two_workers_one_killed_and_restarted(topics: Topics, history: History, tmp_path: Path) -> None:
    def kill_one(group: list[Worker], n: int) -> None:
        victim = group[n % 2]
        victim.kill()
        time.sleep(1.0)  # let the survivor take the partitions over before the victim rejoins
        victim.start()

    namespace = run_with_faults(topics, history, tmp_path, workers=2, fault=kill_one, faults=3)
    assert_exact(topics, namespace, history)


def test_redis_killed_mid_run_and_restarted_from_its_aof(topics: Topics, history: History, tmp_path: Path) -> None:
    with private_redis(topics, tmp_path) as (redis, private_topics):

        def crash_redis(_: list[Worker], __: int) -> None:
            redis.kill()
            time.sleep(2.0)  # the worker sees Redis gone and backs off
            redis.start()

        namespace = run_with_faults(private_topics, history, tmp_path, workers=1, fault=crash_redis, faults=2)
        assert_exact(private_topics, namespace, history)


def test_redis_unresponsive_mid_run(topics: Topics, history: History, tmp_path: Path) -> None:
    """Redis stops answering (SIGSTOP) for longer than the worker's 5 s socket timeout, then resumes. The
    worker gives up on commands Redis may still run once it resumes, possibly after the retry's own reads
    (the compare-and-set writes must catch that); its batches wait meanwhile."""
    with private_redis(topics, tmp_path) as (redis, private_topics):

        def freeze_redis(_: list[Worker], __: int) -> None:
            pid = redis.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(7.0)
            finally:
                os.kill(pid, signal.SIGCONT)

        namespace = run_with_faults(private_topics, history, tmp_path, workers=1, fault=freeze_redis, faults=2)
        assert_exact(private_topics, namespace, history)


def test_a_worker_waiting_out_a_redis_outage_keeps_its_liveness_file_fresh(
    topics: Topics, history: History, tmp_path: Path
) -> None:
    """Backpressure is not a hang: while Redis is down for 12 s the worker's batches retry, and the file its
    liveness probe reads keeps being touched (an orchestrator must not restart a worker for an outage a
    restart cannot cure)."""
    alive = tmp_path / "run" / "alive"
    with private_redis(topics, tmp_path) as (redis, private_topics):
        namespace = f"t{uuid.uuid4().hex[:8]}"
        worker = Worker(private_topics, namespace, tmp_path, {"RAPPORT_STREAM__LIVENESS_FILE": str(alive)})
        worker.start()
        try:
            produce_raw(private_topics, history.lines[:2_000])
            wait_until_caught_up(private_topics, namespace, worker)
            redis.kill()
            produce_raw(private_topics, history.lines[2_000:4_000])  # batches that cannot be written
            ages = []
            for _ in range(12):  # longer than the longest retry pause (5 s) and than the bound below
                time.sleep(1.0)
                ages.append(time.time() - alive.stat().st_mtime)
            redis.start()
            wait_until_caught_up(private_topics, namespace, worker)
        finally:
            worker.stop()
        assert max(ages) < 10, f"the liveness file went {max(ages):.1f} s untouched during the outage"
        assert "consumption paused" in worker.troubles(), "the worker never waited on Redis"


def test_kafka_killed_mid_run_and_restarted_on_its_storage(topics: Topics, history: History, tmp_path: Path) -> None:
    """The broker (the worker's only one, so every topic it reads and writes, and its group's coordinator) is
    SIGKILLed while the worker is midway through the history, and restarted on its storage 15 s later: the
    worker waits, rejoins, and ends with the oracle's profiles.

    Meanwhile its liveness file keeps being touched: before session 37 a batch waiting for its output's
    acknowledgements left it untouched for the whole outage, and the orchestrator's probe would restart a
    worker that a restart could not help. And aiokafka's ~150 lines a second of failed connections are held
    back to one a minute per kind (``services.logs``), so that the worker's own line about the wait is not
    buried."""
    alive = tmp_path / "run" / "alive"
    with private_kafka(topics.settings, tmp_path) as (kafka, private_topics):
        extra_env = {"RAPPORT_STREAM__LIVENESS_FILE": str(alive)}
        with worker_midway(private_topics, history, tmp_path, extra_env=extra_env) as (namespace, worker):
            kafka.kill()
            ages = []
            for _ in range(15):  # past the retries' longest pause (5 s) and the ack wait's warning (10 s)
                time.sleep(1.0)
                ages.append(time.time() - alive.stat().st_mtime)
            kafka.start()
            wait_until_caught_up(private_topics, namespace, worker)
            logged = worker.log_lines()
        assert_exact(private_topics, namespace, history)
    assert max(ages) < 5, f"the liveness file went {max(ages):.1f} s untouched during the outage"
    waits = [line for line in logged if "streams.outbox: waiting" in line]
    assert waits, "no batch waited for acknowledgements: the outage did not meet one"
    kafka_lines = [line for line in logged if " aiokafka" in line]
    # Six kinds (connect, metadata, fetch, produce, coordinator, commit), a few times each around a
    # reconnection: without the filter, over 2,000 lines.
    assert len(kafka_lines) < 100, f"{len(kafka_lines)} aiokafka lines:\n" + "\n".join(kafka_lines[:40])


def test_a_worker_stopped_during_a_kafka_outage_exits_promptly_and_loses_nothing(
    topics: Topics, history: History, tmp_path: Path
) -> None:
    """The broker SIGKILLed while the worker is midway, then SIGTERM during the outage: the worker exits 0
    within seconds, abandoning the batch that waits for acknowledgements, the offset commit and the
    producer's unsent records. Before session 36 it never exited: the batch waited for the broker for as
    long as it was down, then Faust's final commit did, and aiokafka's own CancelledError killed the consumer
    thread. A new worker, the broker back on its storage, ends with the oracle's profiles: nothing that was
    abandoned had been marked applied."""
    fast = {"RAPPORT_STREAM__STOP_GRACE_S": "3", "RAPPORT_KAFKA__COMMIT_TIMEOUT_S": "3"}
    with private_kafka(topics.settings, tmp_path) as (kafka, private_topics):
        with worker_midway(private_topics, history, tmp_path, extra_env=fast) as (namespace, worker):
            kafka.kill()
            time.sleep(3.0)
            assert worker.process is not None
            started = time.monotonic()
            assert stopped(worker.process, 30) == 0, worker.troubles()
            took = time.monotonic() - started
            kafka.start()
            worker.start()
            wait_until_caught_up(private_topics, namespace, worker)
        assert_exact(private_topics, namespace, history)
    # The grace for the batch (3 s), the commit's bound (3 s), the producer's (3 s), and Faust's own steps.
    assert took < 20, f"the stop took {took:.1f} s"


def test_a_worker_started_while_kafka_is_down_waits_and_then_catches_up(
    topics: Topics, history: History, tmp_path: Path
) -> None:
    """The broker is down when the worker starts: the worker waits (logging its pauses) instead of exiting,
    and once the broker is back it ends with the oracle's profiles. Before 2026-12-05 its start failed."""
    with private_kafka(topics.settings, tmp_path) as (kafka, private_topics):
        produce_raw(private_topics, history.lines)
        kafka.kill()
        namespace = f"t{uuid.uuid4().hex[:8]}"
        (tmp_path / "w").mkdir()
        worker = Worker(private_topics, namespace, tmp_path / "w")
        worker.start()
        try:
            time.sleep(6.0)
            assert worker.alive(), f"the worker exited while Kafka was down; logs in {worker.log_dir}"
            assert "starting paused" in worker.troubles(), worker.troubles()
            kafka.start()
            wait_until_caught_up(private_topics, namespace, worker)
        finally:
            worker.stop()
        assert_exact(private_topics, namespace, history)


@contextmanager
def worker_midway(
    topics: Topics, history: History, tmp_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, Worker]]:
    """The history produced, and a worker of a new namespace started and midway through it (its group has
    committed 20,000 raw records); the namespace and the worker, stopped afterwards. The history is produced
    first: the producer is not under test here."""
    produce_raw(topics, history.lines)
    namespace = f"t{uuid.uuid4().hex[:8]}"
    (tmp_path / "w").mkdir()
    worker = Worker(topics, namespace, tmp_path / "w", extra_env=extra_env)
    worker.start()
    try:
        wait_for_progress(topics, namespace, worker, at_least=20_000)
        assert not caught_up(topics, namespace), "the worker finished first: make the history longer"
        yield namespace, worker
    finally:
        worker.stop()


def wait_for_progress(topics: Topics, namespace: str, worker: Worker, at_least: int) -> None:
    """Until the worker's group has committed ``at_least`` raw records."""
    deadline = time.monotonic() + 120
    with CatchUpProbe(topics, namespace) as probe:
        while sum((probe.committed() or {}).values()) < at_least:
            assert worker.alive(), f"worker exited; logs in {worker.log_dir}"
            assert time.monotonic() < deadline, f"no progress; logs in {worker.log_dir}"
            time.sleep(0.1)
