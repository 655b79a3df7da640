"""`rapport topics create` on the real broker: creates the catalogue, is idempotent, reports drift."""

from __future__ import annotations

import uuid

import pytest

from deploy.localstack import LocalStack
from schemas.topics import CATALOGUE, full_name
from services.settings import Settings
from services.topics_admin import TopicState, admin_client, ensure_topics
from tests.kafka_support import rapport

pytestmark = pytest.mark.integration


def test_create_is_idempotent_and_reports_topics_that_differ(settings: Settings, local_stack: LocalStack) -> None:
    prefix = f"{settings.kafka.topic_prefix}{uuid.uuid4().hex[:6]}."
    own = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})})
    names = [full_name(spec, prefix) for spec in CATALOGUE]
    drifted = full_name(CATALOGUE[0], prefix)
    try:
        # An operator made events.clicks by hand with too few partitions and compaction.
        with admin_client(own) as admin:
            admin.create_topics(
                {drifted: {"num_partitions": 2, "replication_factor": 1, "configs": {"cleanup.policy": "compact"}}},
                wait_for_metadata=True,
            )

        first = {r.name: r for r in ensure_topics(own)}
        assert first[drifted].state is TopicState.DIFFERS
        assert first[drifted].partitions == 2
        assert any("partitions: 2 (catalogue: 6)" in d for d in first[drifted].differences)
        assert any("cleanup.policy: compact (catalogue: delete)" in d for d in first[drifted].differences)
        assert {r.state for n, r in first.items() if n != drifted} == {TopicState.CREATED}

        second = {r.name: r for r in ensure_topics(own)}
        assert {r.state for n, r in second.items() if n != drifted} == {TopicState.OK}
        assert second[drifted].state is TopicState.DIFFERS

        with admin_client(own) as admin:
            described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
        expected = {full_name(s, prefix): s.partition_count(own.kafka.event_partitions) for s in CATALOGUE}
        assert described == {**expected, drifted: 2}

        # The command line says the same.
        env = {"RAPPORT_KAFKA__TOPIC_PREFIX": prefix, "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": own.kafka.bootstrap_servers}
        shown = rapport("topics", "create", env=env)
        assert shown.returncode == 0, shown.stderr
        assert "differs" in shown.stdout
        assert "partitions: 2 (catalogue: 6)" in shown.stdout
    finally:
        with admin_client(own) as admin:
            admin.delete_topics(names)
