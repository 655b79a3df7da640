"""`rapport topics create` on the real broker: creates the catalogue, is idempotent, reports drift, and exits 1
on a difference Rapport cannot work with (partitions, cleanup policy)."""

from __future__ import annotations

import time
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
    drifted, tuned = full_name(CATALOGUE[0], prefix), full_name(CATALOGUE[1], prefix)
    partitions = CATALOGUE[1].partition_count(own.kafka.event_partitions)
    env = {"RAPPORT_KAFKA__TOPIC_PREFIX": prefix, "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": own.kafka.bootstrap_servers}
    try:
        # An operator made events.clicks by hand with too few partitions and compaction, and events.emails with
        # a retention of a week.
        with admin_client(own) as admin:
            admin.create_topics(
                {
                    drifted: {"num_partitions": 2, "replication_factor": 1, "configs": {"cleanup.policy": "compact"}},
                    tuned: {
                        "num_partitions": partitions,
                        "replication_factor": 1,
                        "configs": {"retention.ms": "604800000"},
                    },
                },
                wait_for_metadata=True,
            )

        first = {r.name: r for r in ensure_topics(own)}
        assert first[drifted].state is TopicState.CONFLICTS
        assert first[drifted].partitions == 2
        assert any("partitions: 2 (catalogue: 6)" in d for d in first[drifted].differences)
        assert any("cleanup.policy: compact (catalogue: delete)" in d for d in first[drifted].differences)
        assert first[tuned].state is TopicState.DIFFERS
        assert first[tuned].differences == ("retention.ms: 604800000 (catalogue: -1)",)
        assert {r.state for n, r in first.items() if n not in (drifted, tuned)} == {TopicState.CREATED}

        second = {r.name: r for r in ensure_topics(own)}
        assert {r.state for n, r in second.items() if n not in (drifted, tuned)} == {TopicState.OK}
        assert (second[drifted].state, second[tuned].state) == (TopicState.CONFLICTS, TopicState.DIFFERS)

        with admin_client(own) as admin:
            described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
        expected = {full_name(s, prefix): s.partition_count(own.kafka.event_partitions) for s in CATALOGUE}
        assert described == {**expected, drifted: 2}

        # The command line says the same, and fails on the conflict (until 2026-12-07 it exited 0).
        shown = rapport("topics", "create", env=env)
        assert shown.returncode == 1, shown.stdout
        assert "conflicts" in shown.stdout
        assert "partitions: 2 (catalogue: 6)" in shown.stdout
        assert f"rapport: {drifted}: partitions or cleanup policy differ from the catalogue" in shown.stderr

        with admin_client(own) as admin:
            admin.delete_topics([drifted])
        deadline = time.monotonic() + 30
        while (shown := rapport("topics", "create", env=env)).returncode != 0:  # the deletion takes a moment
            assert time.monotonic() < deadline, shown.stdout + shown.stderr
            time.sleep(0.5)
        assert "differs" in shown.stdout
        assert "conflicts" not in shown.stdout
    finally:
        with admin_client(own) as admin:
            admin.delete_topics(names)
