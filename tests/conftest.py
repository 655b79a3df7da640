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
from services.settings import Settings
from tests.kafka_support import Topics, created_topics

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def session_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def settings(session_id: str) -> Settings:
    """Settings of this test session: the configured stack, a topic prefix of its own."""
    base = Settings(_env_file=None)
    stack = base.stack
    if "RAPPORT_STACK__STATE_DIR" not in os.environ:
        stack = stack.model_copy(update={"state_dir": REPO / ".rapport" / "test-stack"})
    kafka = base.kafka.model_copy(update={"topic_prefix": f"test-{session_id}."})
    return base.model_copy(update={"stack": stack, "kafka": kafka})


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


@pytest.fixture
def topics(settings: Settings, local_stack: LocalStack) -> Iterator[Topics]:
    """Catalogue topics of this test alone (a prefix of its own), deleted afterwards."""
    prefix = f"{settings.kafka.topic_prefix}{uuid.uuid4().hex[:6]}."
    own = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})})
    with created_topics(own) as made:
        yield made
