"""The topic catalogue and its documentation agree."""

from __future__ import annotations

import re
from pathlib import Path

from schemas.events import EVENT_TYPES
from schemas.topics import CATALOGUE, MODEL_EXAMPLES, RAW_EVENT_TOPICS, TOPIC_BY_EVENT_TYPE, Cleanup

DOC = (Path(__file__).resolve().parents[2] / "docs" / "topics.md").read_text()


def test_every_catalogue_topic_is_documented_with_its_partitions_and_cleanup() -> None:
    rows = {m[0]: m for m in re.findall(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \| (\w+) \|", DOC, flags=re.M)}
    assert set(rows) == {spec.name for spec in CATALOGUE}
    for spec in CATALOGUE:
        _, partitions, _, cleanup = rows[spec.name]
        assert cleanup == spec.cleanup.value
        expected = str(spec.partitions) if spec.partitions is not None else "event partitions (6)"
        assert partitions.strip() == expected


def test_each_event_type_has_a_raw_topic() -> None:
    assert set(TOPIC_BY_EVENT_TYPE) == set(EVENT_TYPES)
    assert set(TOPIC_BY_EVENT_TYPE.values()) == set(RAW_EVENT_TOPICS)


def test_one_trainer_and_compacted_erasures() -> None:
    assert MODEL_EXAMPLES.partition_count(12) == 1
    assert next(s for s in CATALOGUE if s.name == "erasures").cleanup is Cleanup.COMPACT
    assert all(spec.config()["retention.ms"] == "-1" for spec in RAW_EVENT_TOPICS)
