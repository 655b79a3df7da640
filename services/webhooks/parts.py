"""One webhook's deliveries: its own consumer group over ``segments.changes``, so that an endpoint that is down
holds back only itself. Every other webhook's part goes on; a slow one lags, visibly, as its group's lag.

Order of work for a fetched batch: each change the webhook wants is sent (``services.webhooks.sender``), the
outcomes are written to its delivery log, then the positions are committed. A crash re-sends what was not
committed, never skips it: at least once per (change, webhook), in the topic's order per customer.

A batch is worked on for at most ``webhooks.batch_budget_s``: then what was delivered is logged and committed,
the rest is read again (the consumer seeks back to it). aiokafka's consumer leaves its group when it is not
polled for ``max_poll_interval_ms`` (300 s), and a whole batch of changes to an endpoint that is down would
take hours of retries.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import TopicPartition

from schemas.topics import SEGMENT_CHANGES, full_name
from services.kafka_clients import commit_offsets, stop_consumer
from services.settings import Settings
from services.webhooks.sender import Change, Retrying, Sender
from services.webhooks.starts import first_offset
from services.webhooks.store import Delivery, Handover, Webhook, WebhookStore
from streams.backoff import Backoff, through_outages

log = logging.getLogger(__name__)

MAX_RECORDS = 500  # fetched at once


def parse(value: bytes | None) -> Change | None:
    """The change id and segment of a ``segments.changes`` record; None if it is not one."""
    try:
        change = orjson.loads(value or b"")
        return str(change["change_id"]), str(change["segment"]), value or b""
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Shared:
    """What the parts of one deliverer share."""

    settings: Settings
    sender: Sender
    store: WebhookStore
    handover: Handover
    refuse_a_drop: Callable[[], Awaitable[None]]  # raises if the namespace is being dropped
    stop: asyncio.Event


class WebhookPart:
    def __init__(self, hook: Webhook, shared: Shared) -> None:
        self.hook = hook
        self.shared = shared
        self.settings = shared.settings
        self.stop = shared.stop
        self.backoff = Backoff(shared.settings.stream.retry_initial_s, shared.settings.stream.retry_max_s)
        # Changes whose retries a cut interrupted (at most one per partition): they go on when read again.
        self.retrying: dict[str, Retrying] = {}
        self.beat_at = time.monotonic()

    def alive(self) -> None:
        """Beaten at every fetch, attempt and outage pause: the deliverer's liveness file is touched only while
        every part beats (``services.webhooks.deliver``)."""
        self.beat_at = time.monotonic()

    async def run(self) -> None:
        """Deliver until ``stop`` is set (or the task is cancelled: the webhook was removed)."""
        what = f"webhook {self.hook.webhook_id}: connecting"
        consumer = await through_outages(self._started, self.backoff, what, alive=self.alive, stop=self.stop)
        if consumer is None:
            return
        listener = _Positions(self, consumer)
        try:
            consumer.subscribe([full_name(SEGMENT_CHANGES, self.settings.kafka.topic_prefix)], listener=listener)
            while not self.stop.is_set():
                self.alive()
                batches = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
                if listener.failed is not None:
                    raise listener.failed
                if not listener.placed:
                    # Fetched from where aiokafka put the partitions before the listener placed them: read again.
                    for tp, records in batches.items():
                        consumer.seek(tp, records[0].offset)
                    continue
                if batches:
                    await self._deliver(consumer, batches)
        finally:
            await stop_consumer(consumer)

    async def _started(self) -> AIOKafkaConsumer:
        """A started consumer of this webhook's group; a webhook registered while Kafka is down waits for it."""
        kafka = self.settings.kafka
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=f"{kafka.client_id}-webhooks",
            group_id=self.settings.webhook_part_group(self.settings.profile.namespace, self.hook.webhook_id),
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # only past the retention: positions never committed are placed
        )
        try:
            await consumer.start()
        except BaseException:
            await stop_consumer(consumer)
            raise
        return consumer

    async def _deliver(self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]]) -> None:
        deadline = time.monotonic() + self.settings.webhooks.batch_budget_s
        deliveries: list[Delivery] = []
        cut = False
        for tp, records in sorted(batches.items(), key=lambda batch: batch[0].partition):
            for record in records:
                if cut or self.stop.is_set() or time.monotonic() > deadline:
                    _read_again(consumer, tp, record.offset)
                    if not cut and not self.stop.is_set():
                        log.info(
                            "webhook %s: batch cut at its budget (webhooks.batch_budget_s) after %d changes: the "
                            "rest is read again",
                            self.hook.webhook_id,
                            len(deliveries),
                        )
                    cut = True
                    break
                change = parse(record.value)
                if change is None:
                    log.warning("skipping a record that is not a segment change at %s:%s", tp.partition, record.offset)
                    continue
                if not self.hook.wants(change[1]):
                    continue
                retrying = self.retrying.get(change[0])
                outcome = await self.shared.sender.send(
                    self.hook, change, until=deadline, stop=self.stop, alive=self.alive, retrying=retrying
                )
                if isinstance(outcome, Retrying):  # its next attempt comes after the budget, or stopped
                    self.retrying[outcome.change_id] = outcome
                    if not self.stop.is_set():
                        log.info(
                            "webhook %s: change %s failed %d times (%s); next attempt in %.1f s",
                            self.hook.webhook_id,
                            outcome.change_id,
                            outcome.attempts,
                            outcome.error,
                            outcome.next_at - time.monotonic(),
                        )
                    _read_again(consumer, tp, record.offset)
                    cut = True
                    break
                self.retrying.pop(change[0], None)
                deliveries.append(outcome)
        what = f"webhook {self.hook.webhook_id}: delivery"
        logged = functools.partial(self._log, deliveries)
        if await through_outages(logged, self.backoff, what, alive=self.alive, stop=self.stop) is None:
            return  # stopped during an outage: not logged, so not committed either, and sent again
        await through_outages(
            functools.partial(self._commit, consumer), self.backoff, what, alive=self.alive, stop=self.stop
        )

    async def _log(self, deliveries: list[Delivery]) -> bool:
        await self.shared.store.log(self.hook.webhook_id, deliveries)
        return True

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await commit_offsets(consumer, self.settings.kafka.commit_timeout_s)
        except (CommitFailedError, IllegalStateError) as exc:
            # Not an outage: the group moved these partitions to another deliverer, which goes on from the
            # last commit. Retrying would fail the same way for ever.
            log.warning("webhook %s: not committed, the partitions were reassigned (%s)", self.hook.webhook_id, exc)


def _read_again(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    """The next fetch of ``tp`` starts at ``offset``, if ``tp`` is still this consumer's: the group may have moved
    it to another deliverer while a change was being sent, and that one starts from the last commit."""
    if tp in consumer.assignment():
        consumer.seek(tp, offset)


class _Positions(ConsumerRebalanceListener):  # type: ignore[misc]
    """On each assignment: the namespace's drop checked (the first time), and every partition that has no
    committed position placed where ``services.webhooks.starts`` says. aiokafka logs and swallows what a
    listener raises, so a failure is kept in ``failed`` for the loop to raise."""

    def __init__(self, part: WebhookPart, consumer: AIOKafkaConsumer) -> None:
        self.part = part
        self.consumer = consumer
        self.checked = False
        self.placed = False
        self.failed: BaseException | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.placed = False
        self.part.retrying.clear()  # what comes back after the rebalance starts its retries afresh

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        part = self.part
        try:
            if assigned and not self.checked:
                what = f"webhook {part.hook.webhook_id}: checking the namespace"
                await through_outages(part.shared.refuse_a_drop, part.backoff, what, alive=part.alive, stop=part.stop)
                self.checked = True
            for tp in sorted(assigned, key=lambda tp: tp.partition):
                if await self.consumer.committed(tp) is None:
                    rule = part.settings.webhooks.start_from
                    start = await first_offset(self.consumer, tp, part.hook, part.shared.handover, rule)
                    self.consumer.seek(tp, start)
        except Exception as exc:  # raised by the loop, outside aiokafka's rebalance
            self.failed = exc
            return
        self.placed = True
