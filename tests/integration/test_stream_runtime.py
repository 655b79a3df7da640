"""The batch runtime (``streams/``) against the real broker and Redis, with crashes of both.

Workers are real processes (``tests.streams_support.counting_worker``) counting records per key in Redis.
The oracle is the list of keys that was produced: whatever was killed, restarted or rebalanced, each key's
count must equal the number of records produced with it, no more (nothing applied twice) and no less
(nothing skipped).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.localstack import RedisNode
from services.settings import Settings, StackSettings
from tests.kafka_support import Topics
from tests.streams_support.counting_worker import CountingKeys
from tests.streams_support.runs import (
    BackgroundLoad,
    CountingStore,
    Run,
    expected_counts,
    free_port,
    keyed_load,
    produce,
    raw_consume_rate,
    wait_until,
)

pytestmark = pytest.mark.integration

# Short enough that a killed worker's partitions move within seconds (the broker's minimum is 6 s).
FAST_FAILOVER = {"session_timeout_s": "6", "heartbeat_interval_s": "1"}


def make_run(settings: Settings, topics: Topics, log_dir: Path) -> Run:
    tag = uuid.uuid4().hex[:8]
    return Run(
        settings=settings,
        topic=topics.names["events.clicks"],
        group=f"counting-{tag}",
        store=CountingStore(settings.redis.url, CountingKeys(f"counting-{tag}")),
        log_dir=log_dir,
    )


@pytest.fixture
def run(topics: Topics, tmp_path: Path) -> Iterator[Run]:
    """Counting workers on the session's broker and Redis."""
    made = make_run(topics.settings, topics, tmp_path)
    try:
        yield made
    finally:
        print(made.close())


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisNode]:
    """A Redis of this test alone (the session's may be the developer's, which is never killed)."""
    node = RedisNode(StackSettings(state_dir=tmp_path / "stack", redis_port=free_port()))
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def private_run(topics: Topics, private_redis: RedisNode, tmp_path: Path) -> Iterator[Run]:
    """Counting workers on the session's broker and a private Redis."""
    url = f"redis://{private_redis.address}/0"
    settings = topics.settings.model_copy(update={"redis": topics.settings.redis.model_copy(update={"url": url})})
    made = make_run(settings, topics, tmp_path)
    try:
        yield made
    finally:
        print(made.close())


def test_one_worker_applies_every_record_once_and_commits_on_stop(run: Run) -> None:
    keys = keyed_load(200_000)
    ends = produce(run.settings, run.topic, keys)
    raw_rate = raw_consume_rate(run.settings, run.topic, ends)

    startup_s, rate = run.timed_worker(ends)
    (worker,) = run.workers
    print(
        f"\n200,000 records, 6 partitions, 1,000 keys: worker {rate:,.0f} events/s (one Lua write per batch), "
        f"raw aiokafka getmany {raw_rate:,.0f} events/s, ratio {rate / raw_rate:.2f}; "
        f"worker start to first batch {startup_s:.1f} s"
    )

    assert run.store.checkpoints() == ends
    assert run.store.counts() == expected_counts(keys)

    ticks = run.store.ticks()
    wait_until(lambda: run.store.ticks() >= ticks + 2, 10, "ticks while idle")

    assert worker.stop() == 0, worker.tail()
    assert run.committed() == ends, "a clean stop commits everything that was applied"


def test_worker_killed_at_random_moments_loses_and_duplicates_nothing(run: Run) -> None:
    seed = random.randrange(1 << 32)
    print(f"\nkill moments seed {seed}")
    rng = random.Random(seed)
    keys = keyed_load(200_000, seed=2)
    load = BackgroundLoad(run.settings, run.topic, keys, rate=10_000)
    # Static membership: the restarted process takes its partitions back without waiting for a rebalance.
    worker = run.worker(instance_id="counting-0")
    for _ in range(6):
        before = run.store.progress()
        wait_until(lambda: run.store.progress() > before, 30, "the worker applying batches")  # noqa: B023
        # Soon after it resumes, while it works through the backlog the restart left.
        time.sleep(rng.uniform(0, 0.4))
        worker.kill()
        worker.start()
    assert load.running, "every kill happened while records were still arriving"

    ends = load.ends()
    run.caught_up(ends)
    assert run.store.counts() == expected_counts(keys)


def test_two_workers_rebalancing_mid_run_lose_and_duplicate_nothing(run: Run) -> None:
    # 35 s of records: the four rebalances below, one after another, must all happen while they arrive.
    keys = keyed_load(280_000, seed=3)
    load = BackgroundLoad(run.settings, run.topic, keys, rate=8_000)

    def every_partition_assigned(times: int) -> None:
        wait_until(
            lambda: len(epochs := run.store.epochs()) == 6 and min(epochs.values()) >= times, 30, f"{times} assignments"
        )

    def every_partition_advancing() -> None:
        before = run.store.checkpoints()
        wait_until(lambda: all(run.store.checkpoints()[p] > before[p] for p in before), 30, "all partitions advancing")

    a = run.worker("a", **FAST_FAILOVER)
    # b starts once a owns everything: two workers joining together can form one generation between them,
    # and then no partition is ever assigned a second time (a likely cause of this wait's rare timeouts).
    every_partition_assigned(1)
    b = run.worker("b", **FAST_FAILOVER)
    every_partition_assigned(2)  # a alone, then a and b
    a.kill()
    every_partition_advancing()  # b took a's partitions over once a's session expired
    a.start()
    every_partition_assigned(4)  # b alone, then a and b again
    assert b.stop() == 0, b.tail()  # a clean leave: a rebalance at once, b commits on the way out
    every_partition_advancing()
    b.start()
    assert load.running, "every rebalance happened while records were still arriving"

    ends = load.ends()
    run.caught_up(ends)
    assert run.store.counts() == expected_counts(keys)


def test_redis_losing_its_last_writes_is_caught_up_from_redis_positions(
    private_run: Run, private_redis: RedisNode
) -> None:
    """With ``appendfsync everysec`` a crashed Redis can come back without its last second of writes, which
    the Kafka committed offsets already cover. Resuming from Kafka's offsets would skip those records."""
    run = private_run
    keys = keyed_load(200_000, seed=4)
    load = BackgroundLoad(run.settings, run.topic, keys, rate=20_000)
    worker = run.worker()
    wait_until(lambda: run.store.progress() >= 30_000, 30, "a running start")

    aof = next((private_redis.data_dir / "appendonlydir").glob("*.incr.aof"))
    kept_bytes = aof.stat().st_size
    kept = run.store.checkpoints()  # at least what the first kept_bytes of the AOF hold

    def committed_beyond_kept() -> bool:
        committed = run.committed()
        return committed.keys() == kept.keys() and all(committed[p] > kept[p] for p in kept)

    wait_until(committed_beyond_kept, 10, "Kafka commits beyond what Redis will keep")

    # Frozen (a second or so, well within its session), so that what Redis comes back with can be read
    # before the worker writes again.
    worker.freeze()
    private_redis.kill()
    with aof.open("r+b") as f:  # the writes after `kept_bytes` never reached the disk
        f.truncate(kept_bytes)
    private_redis.start()
    rolled_back, committed = run.store.checkpoints(), run.committed()
    worker.thaw()
    assert all(rolled_back[p] < committed[p] for p in kept), f"Redis kept {rolled_back}, Kafka has {committed}"

    ends = load.ends()
    run.caught_up(ends)
    assert run.store.counts() == expected_counts(keys)


def test_redis_outage_pauses_the_worker_which_then_resumes(private_run: Run, private_redis: RedisNode) -> None:
    run = private_run
    keys = keyed_load(200_000, seed=5)
    load = BackgroundLoad(run.settings, run.topic, keys, rate=20_000)
    worker = run.worker()
    wait_until(lambda: run.store.progress() >= 30_000, 30, "a running start")

    private_redis.stop()  # SIGTERM: Redis saves everything and goes away for a while
    time.sleep(2)  # the commit timer may still commit what was applied before the outage
    committed_early = run.committed()
    time.sleep(3)
    committed_late = run.committed()
    private_redis.start()

    assert worker.alive, worker.tail()
    assert committed_late == committed_early, "nothing is applied, so nothing is committed, while Redis is down"
    resumed = run.store.checkpoints()
    assert committed_late.keys() == resumed.keys()
    assert all(committed_late[p] <= resumed[p] for p in resumed), f"Kafka has {committed_late}, Redis {resumed}"

    ends = load.ends()
    run.caught_up(ends)
    assert run.store.counts() == expected_counts(keys)
    assert "consumption paused" in worker.tail(10_000)
