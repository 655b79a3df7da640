"""Where a webhook's deliveries start, per partition of ``segments.changes``, when its consumer group has no
committed position there:

1. a webhook registered before the hand-over (``services.webhooks.store.Handover``) goes on from where the
   consumer group that deliverers shared until 2026-12-07 had got to: it neither re-sends what that group
   had delivered nor skips what it had not;
2. otherwise, with ``webhooks.start_from = earliest``, the oldest change the topic still holds;
3. otherwise (``latest``) the first change written at or after the webhook's registration, by the record's
   timestamp: changes written while no deliverer ran are sent too. None yet: the end.

A committed position older than the topic's retention goes on from the oldest change still held, whatever
``start_from`` says: what is held is sent.
"""

from __future__ import annotations

from typing import Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from schemas.topics import SEGMENT_CHANGES, full_name
from services.kafka_clients import make_admin
from services.settings import Settings
from services.webhooks.store import Handover, Webhook


def shared_group_offsets(settings: Settings, namespace: str) -> dict[int, int]:
    """The committed positions, per partition, of the shared group of earlier deliverers (none: empty).
    Blocking (kafka-python)."""
    group = settings.webhook_group_of(namespace)
    topic = full_name(SEGMENT_CHANGES, settings.kafka.topic_prefix)
    admin = make_admin(settings, "webhook-handover", request_timeout_ms=10_000)
    try:
        committed = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {tp.partition: found.offset for tp, found in committed.items() if tp.topic == topic and found.offset >= 0}


async def first_offset(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    hook: Webhook,
    handover: Handover,
    start_from: Literal["latest", "earliest"],
) -> int:
    """Where ``hook``'s deliveries start in ``tp`` (the module's rules)."""
    if hook.created_at_ms <= handover.at_ms and tp.partition in handover.offsets:
        return handover.offsets[tp.partition]
    if start_from == "earliest":
        return int((await consumer.beginning_offsets([tp]))[tp])
    # The end first: a change written between the two questions is found by the second, and one written
    # after both is past that end. Asked the other way round, it would be past the end asked for last.
    end = int((await consumer.end_offsets([tp]))[tp])
    found = (await consumer.offsets_for_times({tp: hook.created_at_ms}))[tp]
    return end if found is None else int(found.offset)
