"""Session-wide fixtures: a real Kafka broker and Redis server, and a private corner of them.

The stack fixture reuses a stack that is already running on the configured ports (for instance the one
`make demo` started) and otherwise starts one in `.rapport/test-stack`, stopping at the end exactly what
it started. Each session gets its own topic prefix, so it never reads or writes a user's topics, and
deletes its topics when it ends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.localstack import LocalStack, Outcome
from schemas.topics import CATALOGUE, full_name
from services.settings import Settings
from services.topics_admin import admin_client, ensure_topics

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def session_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def settings(session_id: str) -> Settings:
    """Settings of this test session: the configured stack, a topic prefix of its own."""
    base = Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic-settings' init-only option
    stack = base.stack
    if "RAPPORT_STACK__STATE_DIR" not in os.environ:
        stack = stack.model_copy(update={"state_dir": REPO / ".rapport" / "test-stack"})
    kafka = base.kafka.model_copy(update={"topic_prefix": f"test-{session_id}."})
    return base.model_copy(update={"stack": stack, "kafka": kafka})


@pytest.fixture(scope="session")
def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for `rapport …` subprocesses so they see this session's settings."""
    return {
        **os.environ,
        "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RAPPORT_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "RAPPORT_REDIS__URL": settings.redis.url,
    }


@pytest.fixture(scope="session")
def local_stack(settings: Settings) -> Iterator[LocalStack]:
    stack = LocalStack(settings)
    outcomes = stack.up()
    try:
        yield stack
    finally:
        for node in stack.nodes:
            if outcomes[node.name] is Outcome.STARTED:
                node.stop()


@pytest.fixture(scope="session")
def topics(settings: Settings, local_stack: LocalStack) -> Iterator[dict[str, str]]:
    """This session's catalogue topics, created on the real broker: logical name → full name."""
    ensure_topics(settings)
    names = {spec.name: full_name(spec, settings.kafka.topic_prefix) for spec in CATALOGUE}
    try:
        yield names
    finally:
        with admin_client(settings) as admin:
            admin.delete_topics(list(names.values()))
