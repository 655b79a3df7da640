"""A private local stack (own state dir, free ports) started, probed, crashed and stopped for real.

The stack here never touches the developer's default stack: it lives in a pytest tmp dir and listens on
ports picked at random, and teardown stops exactly the PIDs it started.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from typer.testing import CliRunner

from deploy.localstack import LocalStack, NodeState, Outcome, RedisNode
from deploy.localstack.process import cmdline, is_alive
from services.cli.stack import app
from services.settings import Settings, StackSettings

pytestmark = pytest.mark.integration

TOPIC = "localstack-probe"


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (sockets held open together so none is handed out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def private_settings(state_dir: Path) -> StackSettings:
    kafka_port, controller_port, redis_port = free_ports(3)
    return StackSettings(
        state_dir=state_dir,
        # The shared jar cache (or wherever RAPPORT_STACK__CACHE_DIR points), so jars are fetched once.
        cache_dir=Settings().stack.cache_dir,
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        redis_port=redis_port,
        kafka_heap="512m",
        start_timeout_s=180,
    )


def redis_client(stack: LocalStack) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=stack.settings.redis_port, decode_responses=True)


@pytest.fixture(scope="module")
def first_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, dict[str, Outcome]]]:
    """The private stack right after its first ``up``, and what that ``up`` reported."""
    stack = LocalStack(private_settings(tmp_path_factory.mktemp("stack")))
    try:
        yield stack, stack.up()
    finally:
        stack.down()


@pytest.fixture
def stack(first_up: tuple[LocalStack, dict[str, Outcome]]) -> LocalStack:
    """The private stack, running (``up`` is idempotent, so this is cheap when it already runs)."""
    running = first_up[0]
    running.up()
    return running


def test_up_starts_both_and_a_second_up_reuses_them(first_up: tuple[LocalStack, dict[str, Outcome]]) -> None:
    stack, outcomes = first_up
    assert outcomes == {"redis": Outcome.STARTED, "kafka": Outcome.STARTED}
    pids = {node.name: node.pid for node in stack.nodes}
    assert all(pids.values()), pids

    assert stack.up() == {"redis": Outcome.REUSED, "kafka": Outcome.REUSED}
    assert {node.name: node.pid for node in stack.nodes} == pids


def test_after_the_first_up_a_consumer_group_joins_without_an_error(
    first_up: tuple[LocalStack, dict[str, Outcome]], caplog: pytest.LogCaptureFixture
) -> None:
    """A fresh broker creates its offsets topic on the first coordinator lookup and refuses lookups until it
    has leaders: ``up`` waits for that, so the first group join does not meet the refusal (which aiokafka
    logs as an error before retrying). Run first among the tests that touch Kafka: later, the offsets
    topic exists anyway."""
    stack, _ = first_up
    ensure_probe_topic(stack)

    async def join() -> set[TopicPartition]:
        consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=stack.kafka.address, group_id="localstack-first-join")
        await consumer.start()
        try:
            deadline = time.monotonic() + 30
            while not consumer.assignment() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            return set(consumer.assignment())
        finally:
            await consumer.stop()

    with caplog.at_level(logging.INFO, logger="aiokafka"):
        assigned = asyncio.run(join())
    assert assigned == {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def kafka_admin(stack: LocalStack) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=stack.kafka.address, request_timeout_ms=10_000)


def ensure_probe_topic(stack: LocalStack) -> None:
    """Create a topic, which needs the controller, not just a broker answering metadata."""
    admin = kafka_admin(stack)
    try:
        if TOPIC not in admin.list_topics():
            admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])
        assert TOPIC in admin.list_topics()
    finally:
        admin.close()


def test_kafka_answers_metadata_requests(stack: LocalStack) -> None:
    admin = kafka_admin(stack)
    try:
        cluster = admin.describe_cluster()
        assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [("127.0.0.1", stack.settings.kafka_port)]
    finally:
        admin.close()
    ensure_probe_topic(stack)


def test_redis_answers_and_persists_every_write(stack: LocalStack) -> None:
    client = redis_client(stack)
    try:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("dir") == {"dir": str(stack.redis.data_dir)}
    finally:
        client.close()


def test_status_reports_both_services(stack: LocalStack) -> None:
    statuses = {status.name: status for status in stack.status()}
    assert set(statuses) == {"redis", "kafka"}
    for node in stack.nodes:
        status = statuses[node.name]
        assert status.state is NodeState.RUNNING
        assert status.owned
        assert status.pid == node.pid
        assert status.address == node.address
    kafka_pid, redis_pid = statuses["kafka"].pid, statuses["redis"].pid
    assert kafka_pid is not None
    assert redis_pid is not None
    assert "java" in cmdline(kafka_pid)
    assert "kafka.Kafka" in cmdline(kafka_pid)
    assert "redis-server" in cmdline(redis_pid)
    assert (stack.kafka.log_dir / "server.log").stat().st_size > 0
    assert stack.redis.redis_log.stat().st_size > 0

    env = {
        "RAPPORT_STACK__STATE_DIR": str(stack.state_dir),
        "RAPPORT_STACK__KAFKA_PORT": str(stack.settings.kafka_port),
        "RAPPORT_STACK__KAFKA_CONTROLLER_PORT": str(stack.settings.kafka_controller_port),
        "RAPPORT_STACK__REDIS_PORT": str(stack.settings.redis_port),
    }
    result = CliRunner().invoke(app, ["status"], env=env)
    assert result.exit_code == 0, result.output
    for status in statuses.values():
        assert str(status.pid) in result.output
        assert status.address in result.output
    assert result.output.count("running") == 2
    assert str(stack.state_dir) in result.output


def test_redis_killed_with_sigkill_restarts_with_its_data(stack: LocalStack) -> None:
    client = redis_client(stack)
    try:
        expected = {f"crash:{i}": str(i) for i in range(200)}
        client.mset(expected)
        time.sleep(1.6)  # appendfsync everysec: older writes are on disk, whatever happens next
        old_pid = stack.redis.pid
        assert old_pid is not None

        assert stack.redis.kill() == old_pid
        assert not is_alive(old_pid)
        assert not stack.redis.is_running()
        assert stack.redis.status().state is NodeState.STOPPED

        assert stack.redis.start() is Outcome.STARTED
        assert stack.redis.pid not in (None, old_pid)
        assert client.mget(list(expected)) == list(expected.values())
    finally:
        client.close()


def test_kafka_killed_with_sigkill_restarts_on_the_same_storage(stack: LocalStack) -> None:
    meta = stack.kafka.data_dir / "meta.properties"
    cluster_before = meta.read_text()
    ensure_probe_topic(stack)
    old_pid = stack.kafka.pid
    assert old_pid is not None

    assert stack.kafka.kill() == old_pid
    assert not is_alive(old_pid)
    assert stack.kafka.start() is Outcome.STARTED
    assert stack.kafka.pid not in (None, old_pid)
    assert meta.read_text() == cluster_before, "storage must not be formatted again"
    admin = kafka_admin(stack)
    try:
        assert TOPIC in admin.list_topics()
    finally:
        admin.close()


def wait_for_ping(port: int, timeout_s: float = 20.0) -> None:
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                assert client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, f"nothing answered PING on port {port}"
                time.sleep(0.1)
    finally:
        client.close()


def test_a_server_we_did_not_start_is_used_but_never_stopped(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(tmp_path)]
    external = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        wait_for_ping(port)
        node = RedisNode(StackSettings(state_dir=tmp_path / "state", redis_port=port, start_timeout_s=20))
        assert node.start() is Outcome.EXTERNAL
        status = node.status()
        assert status.state is NodeState.EXTERNAL
        assert status.pid is None
        assert not status.owned
        assert node.stop() is None
        assert node.kill() is None
        assert external.poll() is None, "the external server must survive stop() and kill()"
        assert not node.pid_file.exists()
    finally:
        external.send_signal(signal.SIGTERM)
        external.wait(timeout=10)


def test_down_stops_exactly_the_started_pids_and_keeps_data(stack: LocalStack) -> None:
    pids = {node.name: node.pid for node in stack.nodes}
    pid_files = [node.pid_file for node in stack.nodes]
    assert all(path.exists() for path in pid_files)

    assert stack.down() == pids
    for pid in pids.values():
        assert pid is not None
        assert not is_alive(pid)
    assert not any(path.exists() for path in pid_files)
    assert all(status.state is NodeState.STOPPED for status in stack.status())
    assert (stack.kafka.data_dir / "meta.properties").exists()
    assert (stack.redis.data_dir / "appendonlydir").is_dir()

    assert stack.down() == {"kafka": None, "redis": None}
