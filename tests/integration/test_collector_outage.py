"""The collector while Kafka is down: every answer is 202 for an event Kafka has, or 503 — never a 202 for
an event that never reaches Kafka. A private stack, so the broker can be stopped without touching others."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from deploy.localstack import LocalStack, Outcome
from services.settings import KafkaSettings, RedisSettings, Settings
from tests.api_support import create_key, running_api
from tests.integration.test_localstack import private_settings
from tests.kafka_support import Topics, created_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
CLIENTS = 3


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Settings]]:
    stack = LocalStack(private_settings(tmp_path_factory.mktemp("outage-stack")))
    stack.up()
    try:
        settings = Settings(
            _env_file=None,
            kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{stack.settings.kafka_port}", topic_prefix="outage."),
            redis=RedisSettings(url=f"redis://127.0.0.1:{stack.settings.redis_port}/0"),
        )
        yield stack, settings
    finally:
        stack.down()


def click(event_id: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": "click",
            "timestamp": datetime.now(UTC).isoformat(),
            "source": "web",
            "anonymous_id": "a-outage",
            "action": "page_view",
            "url": "/",
            "session_id": "s-1",
        }
    )


def test_no_event_is_accepted_and_lost_while_kafka_is_down(
    private: tuple[LocalStack, Settings], tmp_path: Path
) -> None:
    stack, settings = private
    with created_topics(settings) as topics:
        env = {**topics.env, "RAPPORT_API__PRODUCE_TIMEOUT_S": "2", "RAPPORT_API__KEY_CACHE_S": "60"}
        token = create_key(env, "--name", "outage", "--scopes", "events:write", "--rate-limit", "10000")
        with running_api(env, tmp_path / "api.log") as base:
            answers: dict[str, int] = {}
            phase = {"name": "before"}
            by_phase: Counter[tuple[str, int]] = Counter()
            stop = threading.Event()

            def post() -> None:
                with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
                    while not stop.is_set():
                        event_id = f"ev-{uuid.uuid4().hex}"
                        status = http.post("/v1/events", content=click(event_id)).status_code
                        answers[event_id] = status
                        by_phase[(phase["name"], status)] += 1

            clients = [threading.Thread(target=post) for _ in range(CLIENTS)]
            for client in clients:
                client.start()
            try:
                time.sleep(3)
                phase["name"] = "down"
                stack.kafka.stop()
                time.sleep(10)
                phase["name"] = "restarted"
                assert stack.kafka.start() is Outcome.STARTED
                _until(lambda: by_phase[("restarted", 202)] >= 50, timeout_s=120)
            finally:
                stop.set()
                for client in clients:
                    client.join()

        assert set(answers.values()) <= {202, 503}, Counter(answers.values())
        assert by_phase[("before", 202)] > 0
        assert by_phase[("down", 503)] > 0, by_phase
        accepted = {event_id for event_id, status in answers.items() if status == 202}
        stored = _event_ids(topics, expected=len(accepted))
        assert accepted - stored == set(), f"{len(accepted - stored)} events answered 202 are not in Kafka"


def _until(condition: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.2)


def _event_ids(topics: Topics, expected: int) -> set[str]:
    return {orjson.loads(r.value)["event_id"] for r in topics.read(["events.clicks"], expected=expected)}
