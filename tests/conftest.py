"""Session-wide fixtures: a real Kafka broker and Redis server, and a private corner of them.

The stack fixture reuses a stack that is already running on the configured ports (for instance the one
`make demo` started) and otherwise starts one in `.rapport/test-stack`, stopping at the end exactly what
it started. Each session gets its own topic prefix and Redis database (15), so it never reads or writes a
user's topics or profiles, and deletes its topics and the keys it wrote when it ends.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.localstack import LocalStack, Outcome
from services.redis_client import make_redis
from services.settings import Settings
from tests.kafka_support import Topics, created_topics

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the stack is an integration test, whether or not its module says so: three
    modules once forgot the marker, and `make unit` (`-m 'not integration'`) then started the broker."""
    for item in items:
        if "local_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def session_id() -> str:
    return uuid.uuid4().hex[:8]


#: The Redis database the suite writes on the stack it uses: a stack it reuses (``make demo``'s) keeps its
#: data in database 0, where the suite would otherwise read its ``live`` namespace's segments and models
#: and leave every namespace it made.
TEST_REDIS_DB = 15


@pytest.fixture(scope="session")
def settings(session_id: str) -> Settings:
    """Settings of this test session: the configured stack, a topic prefix and a Redis database of its own."""
    base = Settings(_env_file=None)
    stack = base.stack
    if "RAPPORT_STACK__STATE_DIR" not in os.environ:
        stack = stack.model_copy(update={"state_dir": REPO / ".rapport" / "test-stack"})
    kafka = base.kafka.model_copy(update={"topic_prefix": f"test-{session_id}."})
    redis = base.redis
    if "RAPPORT_REDIS__URL" not in os.environ:
        redis = redis.model_copy(update={"url": f"redis://127.0.0.1:{stack.redis_port}/{TEST_REDIS_DB}"})
    return base.model_copy(update={"stack": stack, "kafka": kafka, "redis": redis})


@pytest.fixture(scope="session")
def local_stack(settings: Settings) -> Iterator[LocalStack]:
    """The stack, with the session's Redis database as it found it afterwards (every key the session wrote
    there is removed)."""
    stack = LocalStack(settings)
    outcomes = stack.up()
    try:
        found = asyncio.run(_keys(settings))
        yield stack
        asyncio.run(_unlink_all_but(settings, found))
    finally:
        for node in stack.nodes:
            if outcomes[node.name] is Outcome.STARTED:
                node.stop()


async def _keys(settings: Settings) -> set[bytes]:
    redis = make_redis(settings)
    try:
        return {key async for key in redis.scan_iter(count=1000)}
    finally:
        await redis.aclose()


async def _unlink_all_but(settings: Settings, kept: set[bytes]) -> None:
    written = sorted(await _keys(settings) - kept)
    redis = make_redis(settings)
    try:
        for start in range(0, len(written), 1000):
            await redis.unlink(*written[start : start + 1000])
    finally:
        await redis.aclose()


@pytest.fixture
def topics(settings: Settings, local_stack: LocalStack) -> Iterator[Topics]:
    """Catalogue topics of this test alone (a prefix of its own), deleted afterwards."""
    prefix = f"{settings.kafka.topic_prefix}{uuid.uuid4().hex[:6]}."
    own = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})})
    with created_topics(own) as made:
        yield made
