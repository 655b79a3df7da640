"""Moving one webhook's position in ``segments.changes`` (``rapport webhooks rewind``): its changes are sent
again from an instant, or skipped up to now. Each webhook has its own consumer group
(``Settings.webhook_part_group``), so this is Kafka's own offset reset on that group, which Kafka allows
only while the group has no members: the command pauses the webhook, whose parts the deliverers then stop
(``services.webhooks.deliver``), and waits for its group to empty. Blocking (kafka-python)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka.errors import NoError
from kafka.structs import OffsetAndMetadata

from schemas.topics import SEGMENT_CHANGES, full_name
from services.kafka_clients import make_admin, make_consumer, require_topics, topic_partitions
from services.settings import Settings


class DeliverersRunningError(RuntimeError):
    def __init__(self, group: str, members: int, waited_s: float) -> None:
        super().__init__(
            f"the webhook's group still has members after {waited_s:.0f} s ({group}: {members}): a deliverer of a "
            "version that does not pause webhooks? Stop it; Kafka moves a consumer group's position only while it "
            "has no members"
        )


class RewindRefusedError(RuntimeError):
    def __init__(self, group: str, errors: list[str]) -> None:
        super().__init__(
            f"Kafka refused {group}'s new position ({', '.join(errors)}): a deliverer may have joined it meanwhile; "
            "run this again"
        )


@dataclass(frozen=True)
class Rewound:
    group: str
    positions: dict[int, int]  # partition → the first offset to send
    held: int  # changes the topic holds from there: what the webhook's part reads again (or skipped)


def rewind(settings: Settings, namespace: str, webhook_id: str, at_ms: int | None, *, wait_s: float) -> Rewound:
    """Put the webhook's group at the first change written at or after ``at_ms`` in each partition (None: the
    oldest held), the end where there is none, once its group has no members (waiting up to ``wait_s`` for the
    deliverers to stop the paused webhook's parts). Raises ``DeliverersRunningError`` if it still has some,
    ``MissingTopicsError`` if the topic does not exist."""
    topic = full_name(SEGMENT_CHANGES, settings.kafka.topic_prefix)
    require_topics(settings, [topic])
    group = settings.webhook_part_group(namespace, webhook_id)
    admin = make_admin(settings, "webhook-rewind", request_timeout_ms=10_000)
    try:
        deadline = time.monotonic() + wait_s
        while (members := len(admin.describe_groups([group])[group]["members"])) and time.monotonic() < deadline:
            time.sleep(0.2)
        if members:
            raise DeliverersRunningError(group, members, wait_s)
        consumer = make_consumer(settings, "webhook-rewind")
        try:
            partitions = topic_partitions(consumer, topic)
            ends = consumer.end_offsets(partitions)
            if at_ms is None:
                starts = consumer.beginning_offsets(partitions)
            else:
                found = consumer.offsets_for_times(dict.fromkeys(partitions, at_ms))
                starts = {tp: ends[tp] if found[tp] is None else found[tp].offset for tp in partitions}
        finally:
            consumer.close()
        failed = admin.alter_group_offsets(group, {tp: OffsetAndMetadata(o, "", -1) for tp, o in starts.items()})
    finally:
        admin.close()
    refused = sorted({error.__name__ for error in failed.values() if error is not NoError})
    if refused:
        raise RewindRefusedError(group, refused)
    held = sum(ends[tp] - offset for tp, offset in starts.items())
    return Rewound(group, {tp.partition: offset for tp, offset in starts.items()}, held)
