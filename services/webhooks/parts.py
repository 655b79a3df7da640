"""One webhook's deliveries: its own consumer group over ``segments.changes``, so that an endpoint that is down
holds back only itself. Every other webhook's part goes on; a slow one lags, visibly, as its group's lag.

Order of work for a fetched batch: each change the webhook wants is sent (``services.webhooks.sender``), the
batch's partitions at once and each in its order, the outcomes are written to its delivery log, then the
positions are committed. A crash re-sends what was not committed, never skips it: at least once per (change,
webhook), in the topic's order per customer.

An endpoint that answers 410 Gone pauses its webhook (``WebhookStore.pause``): what was delivered before that
change is logged and committed, and the part ends. Resumed, the webhook's part starts again at that change.

A rebalance (a deliverer of the same webhook joins or leaves) hands partitions over at the committed positions:
the revocation waits (``_Assigned.on_partitions_revoked``) until the part has cut its batch after the change in
flight, logged and committed it, so the new owner neither sends again what was delivered nor sends a partition's
changes while the old owner still does. Only a revocation during an outage of Redis or Kafka, which the part
waits out for longer than ``handover_wait_s`` allows, hands over before the batch settled: its changes may then
come twice (at least once still holds).

A batch is worked on for at most ``webhooks.batch_budget_s``: then what was delivered is logged and committed,
the rest is read again (the consumer seeks back to it). aiokafka's consumer leaves its group when it is not
polled for ``max_poll_interval_ms`` (300 s), and a whole batch of changes to an endpoint that is down would
take hours of retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import TopicPartition

from schemas.topics import SEGMENT_CHANGES, full_name
from services.kafka_clients import commit_offsets, stop_consumer
from services.settings import Settings
from services.webhooks.sender import Change, Gone, Retrying, Sender
from services.webhooks.starts import first_offset
from services.webhooks.store import Delivery, Handover, Webhook, WebhookStore
from streams.backoff import Backoff, through_outages

log = logging.getLogger(__name__)

MAX_RECORDS = 500  # fetched at once
#: How long an idle part waits for a change, at the broker and in ``getmany``. A change that arrives, a stop and
#: partitions to place end the wait at once, so this costs no latency; with aiokafka's 500 ms every idle
#: webhook's consumer fetched and went round twice a second, and 1,000 idle webhooks took 62% of a core
#: (``bench.webhooks``).
IDLE_WAIT_MS = 5_000


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
        self.paused = False  # its endpoint is gone: the part ends
        # Set while the group takes partitions away (until it assigns them again) or the deliverer stops: the
        # batch is cut after the change in flight, and retries stop waiting.
        self.halted = asyncio.Event()
        self.settled = asyncio.Event()  # clear while a fetched batch is being delivered, logged and committed
        self.settled.set()
        self._woken: asyncio.Future[None] | None = None  # ends the fetch being waited for (``wake``)

    def alive(self) -> None:
        """Beaten at every fetch, attempt and outage pause: the deliverer's liveness file is touched only while
        every part beats (``services.webhooks.deliver``)."""
        self.beat_at = time.monotonic()

    async def run(self) -> None:
        """Deliver until ``stop`` is set, or the endpoint is gone (or the task is cancelled: the webhook was
        removed or paused)."""
        what = f"webhook {self.hook.webhook_id}: connecting"
        consumer = await through_outages(self._started, self.backoff, what, alive=self.alive, stop=self.stop)
        if consumer is None:
            return
        listener = _Assigned(self, consumer)
        halting = asyncio.create_task(self._halt_on_stop())
        try:
            consumer.subscribe([full_name(SEGMENT_CHANGES, self.settings.kafka.topic_prefix)], listener=listener)
            while not self.stop.is_set() and not self.paused:
                self.alive()
                if listener.unplaced:
                    what = f"webhook {self.hook.webhook_id}: placing its partitions"
                    placing = functools.partial(self._place, consumer, listener)
                    await through_outages(placing, self.backoff, what, alive=self.alive, stop=self.stop)
                    continue
                batches = await self._fetch(consumer)
                if batches:
                    self.settled.clear()
                    try:
                        await self._deliver(consumer, batches)
                    finally:
                        self.settled.set()
        finally:
            halting.cancel()
            await stop_consumer(consumer)

    async def _halt_on_stop(self) -> None:
        await self.stop.wait()
        self.halted.set()
        self.wake()

    def wake(self) -> None:
        """The fetch being waited for, if any, ends with nothing: the part has something else to do first."""
        if self._woken is not None and not self._woken.done():
            self._woken.set_result(None)

    async def handed_over(self) -> None:
        """Returns once the batch being delivered, if any, is cut, logged and committed: the group may then hand
        its partitions over. Waits out an outage for ``handover_wait_s`` at most (past it the new owner may send
        again what this part delivered): the group waits for this member for up to aiokafka's
        ``max_poll_interval_ms`` before going on without it."""
        self.halted.set()
        try:
            await asyncio.wait_for(self.settled.wait(), self.handover_wait_s)
        except TimeoutError:
            log.warning(
                "webhook %s: partitions handed over before the batch being delivered was committed (an outage?): "
                "its new owner may send some of its changes again",
                self.hook.webhook_id,
            )

    @property
    def handover_wait_s(self) -> float:
        """The change in flight's answer, the delivery log's write and the commit, with room to spare."""
        return self.settings.webhooks.timeout_s + self.settings.kafka.commit_timeout_s + 5.0

    async def _place(self, consumer: AIOKafkaConsumer, listener: _Assigned) -> None:
        """The namespace's drop checked (the first time), then each partition assigned since the last fetch put
        at its committed position, or where ``services.webhooks.starts`` says if it has none, and resumed.
        Here, not in the listener: aiokafka sends no heartbeat while a listener runs, and this may wait out an
        outage."""
        if not listener.checked:
            await self.shared.refuse_a_drop()
            listener.checked = True
        rule = self.settings.webhooks.start_from
        assignments = listener.assignments
        listener.unplaced &= consumer.assignment()  # nothing to place that is not this consumer's
        starts: dict[TopicPartition, int] = {}
        for tp in sorted(listener.unplaced, key=lambda tp: tp.partition):
            committed = await consumer.committed(tp)
            starts[tp] = (
                committed
                if committed is not None
                else await first_offset(consumer, tp, self.hook, self.shared.handover, rule)
            )
        if listener.assignments != assignments:
            return  # a rebalance meanwhile: placed again, from positions read after it
        # All at once, once every position is known: the next fetch reads every partition.
        for tp, start in starts.items():
            consumer.seek(tp, start)
            consumer.resume(tp)
        listener.unplaced -= set(starts)

    async def _fetch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """A batch; nothing when the part is woken first (``stop`` set, partitions assigned). aiokafka's fetch
        waits, without a limit, for a rejoin to end (its coordinator down): that is waited out, beating, not taken
        for a hung part."""
        fetching = asyncio.ensure_future(consumer.getmany(timeout_ms=IDLE_WAIT_MS, max_records=MAX_RECORDS))
        self._woken = woken = asyncio.get_running_loop().create_future()
        try:
            while not fetching.done():
                await asyncio.wait({fetching, woken}, timeout=IDLE_WAIT_MS / 1000, return_when=asyncio.FIRST_COMPLETED)
                self.alive()
                if woken.done() and not fetching.done():
                    return {}
            batches: dict[TopicPartition, list[Any]] = fetching.result()
            return batches
        finally:
            self._woken = None
            if not fetching.done():
                fetching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetching

    async def _started(self) -> AIOKafkaConsumer:
        """A started consumer of this webhook's group; a webhook registered while Kafka is down waits for it."""
        kafka = self.settings.kafka
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=f"{kafka.client_id}-webhooks",
            group_id=self.settings.webhook_part_group(self.settings.profile.namespace, self.hook.webhook_id),
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # only past the retention: positions never committed are placed
            fetch_max_wait_ms=IDLE_WAIT_MS,
        )
        try:
            await consumer.start()
        except BaseException:
            await stop_consumer(consumer)
            raise
        return consumer

    async def _deliver(self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]]) -> None:
        """The batch's partitions sent at once, each in its order (a customer's changes are in one partition):
        one at a time, an endpoint answering in 50 ms took at most 20 changes a second. A change whose sending
        did not end (its retries go on after the budget, or the endpoint is gone) stops the other partitions at
        their next change, as the budget and a halt do; what each partition got to is committed."""
        batch = _Batch(
            deadline=time.monotonic() + self.settings.webhooks.batch_budget_s,
            # Per partition of the batch, the first offset not dealt with: what is committed. Only these: a
            # partition assigned meanwhile is not placed yet, and its position is not one to commit.
            done={tp: records[0].offset for tp, records in batches.items()},
        )
        async with asyncio.TaskGroup() as group:
            for tp, records in batches.items():
                group.create_task(self._deliver_partition(consumer, tp, records, batch))
        if batch.over_budget and not self.halted.is_set():
            log.info(
                "webhook %s: batch cut at its budget (webhooks.batch_budget_s) after %d changes: the rest is read "
                "again",
                self.hook.webhook_id,
                len(batch.deliveries),
            )
        await self._settle(consumer, batch.deliveries, batch.done, batch.gone)

    async def _deliver_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[Any], batch: _Batch
    ) -> None:
        for record in records:
            over_budget = time.monotonic() > batch.deadline
            if batch.ended or self.halted.is_set() or over_budget:
                batch.over_budget |= over_budget
                _read_again(consumer, tp, record.offset)
                return
            change = parse(record.value)
            if change is None:
                log.warning("skipping a record that is not a segment change at %s:%s", tp.partition, record.offset)
            elif self.hook.wants(change[1]):
                outcome = await self._send(change, batch.deadline)
                if not isinstance(outcome, Delivery):  # not ended: read again (and sent once resumed, if gone)
                    batch.ended = True
                    batch.gone = batch.gone or (outcome if isinstance(outcome, Gone) else None)
                    _read_again(consumer, tp, record.offset)
                    return
                batch.deliveries.append(outcome)
            batch.done[tp] = record.offset + 1

    async def _send(self, change: Change, deadline: float) -> Delivery | Retrying | Gone:
        outcome = await self.shared.sender.send(
            self.hook, change, until=deadline, stop=self.halted, alive=self.alive, retrying=self.retrying.get(change[0])
        )
        if not isinstance(outcome, Retrying):
            self.retrying.pop(change[0], None)
        else:  # its next attempt comes after the budget, or stopped
            self.retrying[outcome.change_id] = outcome
            if not self.halted.is_set():
                log.info(
                    "webhook %s: change %s failed %d times (%s); next attempt in %.1f s",
                    self.hook.webhook_id,
                    outcome.change_id,
                    outcome.attempts,
                    outcome.error,
                    outcome.next_at - time.monotonic(),
                )
        return outcome

    async def _settle(
        self, consumer: AIOKafkaConsumer, deliveries: list[Delivery], done: dict[TopicPartition, int], gone: Gone | None
    ) -> None:
        """The batch's outcomes logged, then its positions committed, then, if the endpoint is gone, the webhook
        paused. Stopped during an outage: what is not logged is not committed either, and is sent again."""
        what = f"webhook {self.hook.webhook_id}: delivery"
        logged = functools.partial(self._log, deliveries)
        if await through_outages(logged, self.backoff, what, alive=self.alive, stop=self.stop) is None:
            return
        committing = functools.partial(self._commit, consumer, done)
        if await through_outages(committing, self.backoff, what, alive=self.alive, stop=self.stop) is None:
            return
        if gone is not None:
            reason = f"the endpoint answered 410 Gone to change {gone.change_id}"
            pausing = functools.partial(self.shared.store.pause, self.hook.webhook_id, reason)
            paused = await through_outages(pausing, self.backoff, what, alive=self.alive, stop=self.stop)
            if paused is False:  # removed meanwhile, maybe before this batch was logged: the log goes too
                forget = functools.partial(self.shared.store.forget_log, self.hook.webhook_id)
                await through_outages(forget, self.backoff, what, alive=self.alive, stop=self.stop)
            elif paused:
                log.warning("webhook %s paused: %s", self.hook.webhook_id, reason)
            self.paused = paused is not None

    async def _log(self, deliveries: list[Delivery]) -> bool:
        await self.shared.store.log(self.hook.webhook_id, deliveries)
        return True

    async def _commit(self, consumer: AIOKafkaConsumer, done: dict[TopicPartition, int]) -> bool:
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in done.items() if tp in assigned}
        if not offsets:
            return True  # every partition of the batch went to another deliverer, which goes on from the last commit
        try:
            await commit_offsets(consumer, self.settings.kafka.commit_timeout_s, offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # Not an outage: the group moved these partitions to another deliverer, which goes on from the
            # last commit. Retrying would fail the same way for ever.
            log.warning("webhook %s: not committed, the partitions were reassigned (%s)", self.hook.webhook_id, exc)
        return True


@dataclass
class _Batch:
    """What the partitions of one fetched batch, sent at once, share."""

    deadline: float  # monotonic: the batch's budget
    done: dict[TopicPartition, int]
    deliveries: list[Delivery] = field(default_factory=list)
    ended: bool = False  # a change's sending did not end: every partition stops at its next change
    gone: Gone | None = None
    over_budget: bool = False


def _read_again(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    """The next fetch of ``tp`` starts at ``offset``, if ``tp`` is still this consumer's: the group may have moved
    it to another deliverer while a change was being sent, and that one starts from the last commit."""
    if tp in consumer.assignment():
        consumer.seek(tp, offset)


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Each assigned partition paused until the part has placed it (``WebhookPart._place``): nothing is fetched
    from where aiokafka would put it meanwhile (the topic's start, for a partition with no commit)."""

    def __init__(self, part: WebhookPart, consumer: AIOKafkaConsumer) -> None:
        self.part = part
        self.consumer = consumer
        self.checked = False  # the namespace's drop
        self.unplaced: set[TopicPartition] = set()
        self.assignments = 0  # how many there were

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # aiokafka keeps the group's heartbeat going while this waits, and the partitions' commits are still
        # accepted: the group goes on once every member has rejoined.
        await self.part.handed_over()
        self.unplaced -= revoked
        self.part.retrying.clear()  # a change read again after the rebalance starts its retries afresh

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if not self.part.stop.is_set():
            self.part.halted.clear()
        self.consumer.pause(*assigned)
        self.unplaced |= assigned
        self.assignments += 1
        self.part.wake()  # to place them now, not once the fetch being waited for ends
