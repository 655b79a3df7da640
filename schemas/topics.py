"""The topic catalogue: every Kafka topic Rapport reads or writes, in one place.

Names are logical; a deployment may prepend a prefix (tests use one per session). Partition counts of the
event topics are configurable because partitions are the unit of parallelism; the examples topic keeps
exactly one partition so that Kafka's assignment elects a single trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

DAY_MS: Final = 24 * 60 * 60 * 1000


class Cleanup(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One catalogue entry.

    ``partitions`` is ``None`` when the deployment's event partition count applies.
    ``retention_ms`` of ``-1`` keeps records forever (the raw topics are the system of record for replay).
    """

    name: str
    key: str
    description: str
    partitions: int | None = None
    retention_ms: int = -1
    cleanup: Cleanup = Cleanup.DELETE

    def partition_count(self, event_partitions: int) -> int:
        return self.partitions if self.partitions is not None else event_partitions

    def config(self) -> dict[str, str]:
        """Topic-level configs as Kafka names them."""
        return {"cleanup.policy": self.cleanup.value, "retention.ms": str(self.retention_ms)}


CLICKS: Final = TopicSpec("events.clicks", "customer_id or anonymous_id", "Website and app behaviour.")
EMAILS: Final = TopicSpec("events.emails", "customer_id or anonymous_id", "Email platform engagement.")
PURCHASES: Final = TopicSpec("events.purchases", "customer_id or anonymous_id", "Orders and refunds.")
MENTIONS: Final = TopicSpec("events.mentions", "customer_id or anonymous_id", "Social-listening mentions.")
IDENTITIES: Final = TopicSpec(
    "events.identities", "customer_id or anonymous_id", "Identify calls linking ids, with traits."
)
DLQ: Final = TopicSpec(
    "events.dlq",
    "the original record's key",
    "Rejected records: original bytes, reason code and source coordinates in headers.",
    retention_ms=30 * DAY_MS,
)
RESOLVED: Final = TopicSpec(
    "events.resolved",
    "none: partitioned by canonical profile id",
    "Envelopes of resolved records, each in its profile's partition; the apply stage owns the partitions.",
    retention_ms=7 * DAY_MS,
)
SEGMENT_CHANGES: Final = TopicSpec(
    "segments.changes", "customer_id", "Segment entered/exited events, ordered per customer.", retention_ms=30 * DAY_MS
)
MODEL_EXAMPLES: Final = TopicSpec(
    "models.examples",
    "model name",
    "Labelled training examples; one partition so exactly one trainer consumes them.",
    partitions=1,
    retention_ms=30 * DAY_MS,
)
ERASURES: Final = TopicSpec(
    "erasures",
    "customer_id",
    "Erasure records, honoured by live processing and every replay.",
    partitions=1,
    cleanup=Cleanup.COMPACT,
)

CATALOGUE: Final[tuple[TopicSpec, ...]] = (
    CLICKS,
    EMAILS,
    PURCHASES,
    MENTIONS,
    IDENTITIES,
    DLQ,
    RESOLVED,
    SEGMENT_CHANGES,
    MODEL_EXAMPLES,
    ERASURES,
)

RAW_EVENT_TOPICS: Final[tuple[TopicSpec, ...]] = (CLICKS, EMAILS, PURCHASES, MENTIONS, IDENTITIES)

#: Which raw topic carries each event ``type``.
TOPIC_BY_EVENT_TYPE: Final[dict[str, TopicSpec]] = {
    "click": CLICKS,
    "email": EMAILS,
    "purchase": PURCHASES,
    "social_mention": MENTIONS,
    "identify": IDENTITIES,
}


def full_name(spec: TopicSpec, prefix: str) -> str:
    """The topic's name in a deployment.

    >>> full_name(CLICKS, "test-1.")
    'test-1.events.clicks'
    """
    return f"{prefix}{spec.name}"
