"""Session-wide fixtures: a real Kafka broker and Redis server, and a private corner of them.

The stack fixture reuses a stack that is already running on the configured ports (for instance the one
`make demo` started) and otherwise starts one in `.rapport/test-stack`, stopping at the end exactly what
it started. Each session gets its own topic prefix and Redis database (15), so it never reads or writes a
user's topics or profiles, and deletes its topics and the keys it wrote when it ends.

`make test` runs the suite on two pytest-xdist workers. Each worker is a session of its own (its own topic
prefix; Redis database 15 or 14), and both use one stack: the first to need it starts it (``LocalStack.up``
holds a file lock, so the other reuses it), and the controlling process stops what they started once both
have finished (``pytest_sessionfinish``): a worker cannot know whether the other still runs tests.
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
from services.settings import Settings, StackSettings
from tests.kafka_support import Topics, created_topics

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the stack is an integration test, whether or not its module says so: three
    modules once forgot the marker, and `make unit` (`-m 'not integration'`) then started the broker."""
    for item in items:
        if "local_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


#: The run's id, set by the process that runs the tests or controls the workers (who inherit it): it names
#: the file where workers note the stack nodes they started.
RUN_ID = "RAPPORT_TEST_RUN_ID"


def pytest_configure(config: pytest.Config) -> None:
    if _worker_index(config) is None:
        os.environ[RUN_ID] = uuid.uuid4().hex


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller of a parallel run stops the stack nodes its workers started. (A serial run's
    ``local_stack`` fixture stopped its own, and left no such file.)"""
    if _worker_index(session.config) is not None:
        return
    stack = LocalStack(_stack_settings())
    started = _started_file(stack)
    if started.exists():
        names = set(started.read_text().split())
        for node in reversed(stack.nodes):
            if node.name in names:
                node.stop()
        started.unlink()


def _worker_index(config: pytest.Config) -> int | None:
    """The pytest-xdist worker's number (0 for ``gw0``), None in the controller or in a serial run."""
    workerinput = getattr(config, "workerinput", None)
    return None if workerinput is None else int(str(workerinput["workerid"]).removeprefix("gw"))


def _stack_settings() -> StackSettings:
    """The configured stack, with a state directory of the suite's own unless one is configured."""
    stack = Settings(_env_file=None).stack
    if "RAPPORT_STACK__STATE_DIR" not in os.environ:
        stack = stack.model_copy(update={"state_dir": REPO / ".rapport" / "test-stack"})
    return stack


def _started_file(stack: LocalStack) -> Path:
    return stack.state_dir / f"started-by-test-run-{os.environ[RUN_ID]}"


@pytest.fixture(scope="session")
def session_id() -> str:
    return uuid.uuid4().hex[:8]


#: The Redis database the suite writes on the stack it uses: a stack it reuses (``make demo``'s) keeps its
#: data in database 0, where the suite would otherwise read its ``live`` namespace's segments and models
#: and leave every namespace it made. A parallel run's workers count down from it: each removes the keys
#: it wrote when it ends, which must not be the other's.
TEST_REDIS_DB = 15


@pytest.fixture(scope="session")
def settings(session_id: str, request: pytest.FixtureRequest) -> Settings:
    """Settings of this test session: the configured stack, a topic prefix and a Redis database of its own."""
    base = Settings(_env_file=None)
    stack = _stack_settings()
    kafka = base.kafka.model_copy(update={"topic_prefix": f"test-{session_id}."})
    redis = base.redis
    if "RAPPORT_REDIS__URL" not in os.environ:
        db = TEST_REDIS_DB - (_worker_index(request.config) or 0)
        redis = redis.model_copy(update={"url": f"redis://127.0.0.1:{stack.redis_port}/{db}"})
    return base.model_copy(update={"stack": stack, "kafka": kafka, "redis": redis})


@pytest.fixture(scope="session")
def local_stack(settings: Settings, request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    """The stack, with the session's Redis database as it found it afterwards (every key the session wrote
    there is removed)."""
    stack = LocalStack(settings)
    outcomes = stack.up()
    started = [node for node in stack.nodes if outcomes[node.name] is Outcome.STARTED]
    if started and _worker_index(request.config) is not None:
        with _started_file(stack).open("a") as noted:  # for the controller to stop (the module says why)
            noted.write("".join(f"{node.name}\n" for node in started))
        started = []
    try:
        found = asyncio.run(_keys(settings))
        yield stack
        asyncio.run(_unlink_all_but(settings, found))
    finally:
        for node in started:
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
