"""Creating the catalogue's topics, idempotently, and reporting drift from the catalogue."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from schemas.topics import CATALOGUE, TopicSpec, full_name
from services.kafka_clients import make_admin
from services.settings import Settings


class TopicState(StrEnum):
    CREATED = "created"
    OK = "ok"
    DIFFERS = "differs"  # in a setting an operator may tune (retention)
    CONFLICTS = "conflicts"  # in what Rapport relies on: the partition count, or the cleanup policy


#: Settings whose difference breaks Rapport: compaction keeps one record per key (a customer's history would
#: shrink to its last event), and the partition count fixes where each key's records are.
_RELIED_ON: Final = frozenset({"cleanup.policy"})


@dataclass(frozen=True)
class TopicReport:
    name: str
    state: TopicState
    partitions: int
    differences: tuple[str, ...] = field(default=())


@contextmanager
def admin_client(settings: Settings, timeout_ms: int = 30_000) -> Iterator[KafkaAdminClient]:
    client = make_admin(settings, "admin", timeout_ms)
    try:
        yield client
    finally:
        client.close()


def ensure_topics(settings: Settings, catalogue: Sequence[TopicSpec] = CATALOGUE) -> list[TopicReport]:
    """Create missing catalogue topics; leave existing ones alone but report how they differ.

    Existing topics are never altered: shrinking partitions is impossible and growing them would move
    keys between partitions, which breaks per-customer ordering, so an operator must decide.
    """
    prefix = settings.kafka.topic_prefix
    wanted = {full_name(spec, prefix): spec for spec in catalogue}
    with admin_client(settings) as admin:
        existing = {t["name"]: len(t["partitions"]) for t in admin.describe_topics() if t["name"] in wanted}
        missing = {
            name: {
                "num_partitions": spec.partition_count(settings.kafka.event_partitions),
                "replication_factor": settings.kafka.replication_factor,
                "configs": spec.config(),
            }
            for name, spec in wanted.items()
            if name not in existing
        }
        if missing:
            admin.create_topics(missing, wait_for_metadata=True)
        configs = _topic_configs(admin, list(existing)) if existing else {}

    reports = []
    for name, spec in wanted.items():
        partitions = spec.partition_count(settings.kafka.event_partitions)
        if name in missing:
            reports.append(TopicReport(name, TopicState.CREATED, partitions))
            continue
        diffs = []
        conflicts = existing[name] != partitions
        if conflicts:
            diffs.append(f"partitions: {existing[name]} (catalogue: {partitions})")
        for key, value in spec.config().items():
            actual = configs.get(name, {}).get(key)
            if actual is not None and actual != value:
                diffs.append(f"{key}: {actual} (catalogue: {value})")
                conflicts = conflicts or key in _RELIED_ON
        state = TopicState.CONFLICTS if conflicts else TopicState.DIFFERS if diffs else TopicState.OK
        reports.append(TopicReport(name, state, existing[name], tuple(diffs)))
    return reports


def _topic_configs(admin: KafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    described: dict[str, Any] = admin.describe_configs(resources, config_filter="all")
    out: dict[str, dict[str, str]] = {}
    for name, entries in described.get("topic", {}).items():
        out[name] = {key: str(_config_value(entry)) for key, entry in entries.items()}
    return out


def _config_value(entry: Any) -> Any:
    return entry.get("value") if isinstance(entry, dict) else entry
