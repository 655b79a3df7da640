"""A Faust consumer that hands whole fetched batches to a ``BatchHandler`` and commits only what it applied.

Faust's own path delivers one message at a time to agents (~8k msg/s here) and commits offsets that its
streams *acked*, which can be offsets that were never durably applied. This consumer replaces the fetch
loop (``Consumer._drain_messages``, run by Faust's ``Fetcher``) and the commit bookkeeping, and keeps
everything else of Faust: the group membership, the rebalance callbacks, the commit timer, the shutdown.

Order of effects
----------------
Steady state, one fetch at a time, on one task::

    fetch (getmany, <= stream.max_poll_records records)
      -> handler.handle(batch)          the durable, atomic, fenced write of the effects *and* the positions
      -> mark applied                   in memory: next offset per partition = last offset + 1
      -> commit applied offsets         Faust's commit timer (stream.commit_interval_s), on revoke, on stop

So a Kafka committed offset never runs ahead of what the handler stored, and the handler's store (Redis)
is the authoritative position: Kafka's is only a fallback for partitions the store knows nothing about.
If ``handle`` raises, the same batch is retried with capped, jittered exponential backoff and nothing is
fetched meanwhile (backpressure); it is never skipped.

On assignment (new generation), before the first batch::

    handler.on_assigned(partitions, generation)   e.g. bump a fencing epoch per partition
      -> handler.positions(partitions)             the store's next offsets (missing -> Kafka committed)
      -> seek every partition there                 batches then start exactly at the store's position

Faust's recovery would seek every partition to its Kafka committed offset; ``perform_seek`` is overridden
so that it does not (the store can be *behind* Kafka: Redis with ``appendfsync everysec`` may lose its last
second of writes after a crash, which Kafka's committed offsets already cover).

If ``handle`` finds that the store is not at a batch's ``start`` it raises ``StalePosition`` and the
runtime re-reads the positions and seeks there; this is how a store that lost writes is caught up again.

On revocation (before Faust's own handling): stop the flow, wait for the batch in flight (an attempt in
progress finishes; no retry starts once the flow is stopped; an abandoned batch is not marked), commit
what was applied (the old generation is still valid), forget the revoked partitions, ``on_revoked``.
A batch carries the generation it was fetched in and every batch is fetched, applied and marked while the
flow of that generation runs, so no batch mixes generations.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final, TypeVar, cast

import aiokafka
from aiokafka import TopicPartition
from faust.transport.consumer import RecordMap, ensure_TP, ensure_TPset
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.transports import TPorTopicSet
from mode import Service, ServiceT

from services.kafka_clients import stop_consumer
from streams.backoff import Backoff
from streams.handler import Batch, BatchHandler, MustStop, PartitionBatch, StalePosition
from streams.liveness import Liveness
from streams.tasks import given_up

if TYPE_CHECKING:
    from streams.app import BatchApp

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Abandoned:
    """An attempt given up because the partitions are being revoked or the worker stops."""


ABANDONED: Final = _Abandoned()
#: How often a handler call in progress looks whether its flow was stopped (``BatchConsumer._outlived``).
_STOP_CHECK_S: Final = 1.0


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread with a configurable fetch wait.

    aiokafka keeps one fetch request in flight per broker, covering every partition without buffered
    records. When all of those are at the end of their log (an idle ``events.resolved`` partition), the
    broker holds the request for ``fetch_max_wait_ms`` — which Faust fixes at 1,500 ms — and partitions that
    receive data meanwhile wait for it to return: measured stalls of 0.5–1 s between batches, a third of a
    throughput run. A short wait costs a few empty fetches per second when idle. A minimum fetch size makes
    the broker gather records under steady load instead of answering each one (docs/streams.md, "Fetching").
    """

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        stream = cast("BatchApp", self.app).settings.stream
        # Read by AIOKafkaConsumer.start() when it builds its fetcher; Faust offers no setting for them.
        consumer._fetch_max_wait_ms = stream.fetch_max_wait_ms
        consumer._fetch_min_bytes = stream.fetch_min_bytes
        return consumer

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        """Faust's commit, given up once the app is stopping and the commit has run ``kafka.commit_timeout_s``:
        while the broker is down aiokafka looks for the group's coordinator for as long as it takes, and a
        stopping worker's final commit held its stop until it was killed. Giving up loses nothing: a restart
        resumes from the store's positions, not from Kafka's. A running worker's commit is left to wait for
        the broker, as before: cancelling aiokafka's commit while the group recovers is a path its tests
        do not cover."""
        timeout_s = cast("BatchApp", self.app).settings.kafka.commit_timeout_s
        started = time.monotonic()
        commit = asyncio.ensure_future(super()._commit(offsets))

        def stopping_too_long() -> bool:
            return bool(self.app.should_stop) and time.monotonic() - started >= timeout_s

        if not await given_up(commit, stopping_too_long, _STOP_CHECK_S):
            return commit.result()
        log.warning("a stopping worker's offset commit took over %.0f s (is Kafka down?): given up", timeout_s)
        return False

    async def on_thread_stop(self) -> None:
        """Faust's, stopping the consumer with ``stop_consumer``: stopped while the broker was down, aiokafka's
        own CancelledError (aio-libs/aiokafka#647) killed this thread, and the worker waited for it until it
        was killed."""
        await super(faust_aiokafka.AIOKafkaConsumerThread, self).on_thread_stop()  # the method queue, first
        if self._consumer is not None:
            await stop_consumer(self._consumer)


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with a batch fetch loop; see the module docstring for the order of effects."""

    # mode names a subclass's service logger after its module; keep Faust's narration under ``faust.`` so
    # that it can be quieted without quieting this module's own messages.
    logger = logging.getLogger(f"faust.{__name__}")

    def __post_init__(self) -> None:
        super().__post_init__()
        # Partitions of the current assignment, and the generation not yet announced to the handler.
        self._owned: set[TP] = set()
        self._unannounced: int | None = None
        # Next offset the handler's store is at, per owned partition whose position is known.
        self._positions: dict[TP, int] = {}
        # Partitions whose Kafka fetch position is known to be ``_positions[tp]``.
        self._fetching_from_position: set[TP] = set()
        # Next offset to commit per partition: everything below it was applied by the handler.
        self._applied: dict[TP, int] = {}
        # Clear while the fetch loop is inside the handler (or positioning); revocation waits for it.
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_tick = 0.0

    def verify_event_path(self, now: float, tp: TP) -> None:
        """Faust's livelock detector checks its own streams' bookkeeping, which this consumer does not keep
        (it would report every partition idle), and it read a partition's position between an assignment and
        this consumer's seek, when aiokafka has none: an AssertionError that crashed a worker in the
        two-worker crash test. Stalls show in the handler's retry warnings and the worker's stats instead."""

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # -- what the app provides ------------------------------------------------------------------------

    @property
    def _batch_app(self) -> BatchApp:
        return cast("BatchApp", self.app)

    @property
    def _handler(self) -> BatchHandler:
        return self._batch_app.handler

    @functools.cached_property
    def _backoff(self) -> Backoff:
        stream = self._batch_app.settings.stream
        return Backoff(stream.retry_initial_s, stream.retry_max_s)

    @functools.cached_property
    def _alive(self) -> Liveness:
        return Liveness(self._batch_app.settings.stream.liveness_file)

    @property
    def _tick_interval_s(self) -> float:
        return self._batch_app.settings.stream.tick_interval_s

    # -- the fetch loop ---------------------------------------------------------------------------------

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Replaces Faust's per-message loop: one handler call per fetched batch."""
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        # getmany returns after this long without records, so ticks keep coming while idle.
        fetch_timeout_s = min(1.0, self._tick_interval_s)
        try:
            while not (self.should_stop or fetcher_stopped()):
                self._alive()
                generation = self.app.consumer_generation_id
                records, _ = await self._wait_next_records(fetch_timeout_s)
                if not self._may_process(generation):
                    self._distrust(records or {})
                    continue
                self._idle.clear()
                try:
                    await self._step(records or {}, generation)
                finally:
                    self._idle.set()
        except self.consumer_stopped_errors:
            if not self.app.should_stop:
                raise
            log.info("Broker stopped the consumer; shutting down")
        except asyncio.CancelledError:
            if not self.app.should_stop:
                raise

    def _may_process(self, generation: int) -> bool:
        """Whether work of ``generation`` may go on: the flow runs and no rebalance replaced it."""
        return self.flow_active and not self.should_stop and generation == self.app.consumer_generation_id

    async def _step(self, records: RecordMap, generation: int) -> None:
        if self._unannounced is None and self._owned <= self._fetching_from_position:
            if batch := self._assemble(records, generation):
                await self._apply(batch)
        else:
            self._distrust(records)
            await self._prepare(generation)
        if self._unannounced is None and self._may_process(generation):
            await self._maybe_tick(generation)

    async def _prepare(self, generation: int) -> None:
        """Announce the assignment, then seek every partition to the store's position (or back to it)."""
        if (assigned := self._unannounced) is not None:
            owned = set(self._owned)
            outcome = await self._retrying(
                "on_assigned", lambda: self._handler.on_assigned(owned, assigned), generation
            )
            if outcome is ABANDONED:
                return
            self._unannounced = None
            log.info("Assigned %d partitions (generation %d)", len(owned), assigned)
        wanted: dict[TP, int | None] = {
            tp: self._positions[tp] for tp in self._owned - self._fetching_from_position if tp in self._positions
        }
        if unknown := self._owned - self._positions.keys():
            positions = await self._retrying("positions", lambda: self._handler.positions(unknown), generation)
            if isinstance(positions, _Abandoned):
                return
            wanted.update({tp: positions.get(tp) for tp in unknown})
        if wanted:
            await self._seek_to(wanted, generation)

    def _distrust(self, records: RecordMap) -> None:
        """Records fetched but not handled: Kafka's fetch position has moved past them, so seek back first."""
        self._fetching_from_position.difference_update(records)

    def _assemble(self, records: RecordMap, generation: int) -> Batch | None:
        parts: dict[TP, PartitionBatch] = {}
        for atp, fetched in records.items():
            start = self._positions.get(atp)
            if start is None or not fetched:
                continue
            # aiokafka drops what was fetched before a seek; this only makes sure that a record below the
            # store's position can never reach the handler.
            kept = fetched if fetched[0].offset >= start else [r for r in fetched if r.offset >= start]
            if kept:
                tp = ensure_TP(atp)
                parts[tp] = PartitionBatch(tp, start, kept, self._highwater(tp))
        return Batch(generation, parts) if parts else None

    def _highwater(self, tp: TP) -> int | None:
        try:
            return int(self._thread.highwater(tp))
        except Exception:
            return None

    # -- calling the handler ----------------------------------------------------------------------------

    async def _apply(self, batch: Batch) -> None:
        try:
            outcome = await self._retrying("batch", lambda: self._handler.handle(batch), batch.generation)
        except StalePosition as stale:
            # Whatever moved the store (lost writes, a lost reply) may have moved other partitions too.
            log.warning("%s; resuming every partition from the store's positions", stale)
            self._forget_positions(set(self._positions))
            return
        if outcome is ABANDONED:
            # The store may or may not hold the batch: ask it again before the next batch.
            self._forget_positions(batch.parts.keys())
            return
        for tp, part in batch.parts.items():
            if tp in self._owned:
                self._positions[tp] = self._applied[tp] = part.end

    def _forget_positions(self, tps: Iterable[TP]) -> None:
        for tp in list(tps):
            self._positions.pop(tp, None)
            self._fetching_from_position.discard(tp)

    async def _seek_to(self, wanted: Mapping[TP, int | None], generation: int) -> None:
        thread = self._thread
        starts = await self._retrying(
            "seek", lambda: thread.call_thread(_seek_in_thread, thread._ensure_consumer(), wanted), generation
        )
        if isinstance(starts, _Abandoned):
            return
        starts = cast(dict[TP, int], starts)
        log.info("Resuming from %s", ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in sorted(starts.items())))
        self._positions.update(starts)
        self._fetching_from_position.update(starts)

    async def _maybe_tick(self, generation: int) -> None:
        if time.monotonic() - self._last_tick < self._tick_interval_s:
            return
        outcome = await self._retrying("tick", lambda: self._handler.tick(time.time(), self._at_end()), generation)
        if outcome is not ABANDONED:
            self._last_tick = time.monotonic()

    def _at_end(self) -> dict[TP, bool]:
        """Per owned partition: whether the handler's position has reached the partition's end as last fetched."""
        ends = {}
        for tp in self._owned:
            position, highwater = self._positions.get(tp), self._highwater(tp)
            ends[tp] = position is not None and highwater is not None and position >= highwater
        return ends

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]], generation: int) -> T | _Abandoned:
        """``attempt()`` until it succeeds, pausing between failures; abandoned once ``generation`` may not go on.

        Nothing is fetched meanwhile: this is the backpressure of an unavailable Redis or Kafka.
        """
        pauses = None
        failures = 0
        while True:
            try:
                result = await self._outlived(what, attempt, generation)
            except (StalePosition, MustStop):
                raise
            except Exception as exc:
                failures += 1
                pauses = pauses or self._backoff.pauses()
                pause = next(pauses)
                log.warning(
                    "%s failed (attempt %d), consumption paused, retrying in %.2f s: %r",
                    what, failures, pause, exc, exc_info=failures == 1,
                )  # fmt: skip
            else:
                if failures:
                    log.info("%s succeeded after %d failed attempts", what, failures)
                return result
            self._alive()  # waiting out an outage is backpressure, not a hang
            if not self._may_process(generation):
                return ABANDONED
            # A revocation stops the flow: stop waiting at once so that it is not held up.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.suspend_flow.wait(), pause)
            if not self._may_process(generation):
                return ABANDONED

    async def _outlived(self, what: str, attempt: Callable[[], Awaitable[T]], generation: int) -> T | _Abandoned:
        """``attempt()``, cancelled when it is still running ``stream.stop_grace_s`` after its generation
        stopped (a stop, a revocation).

        A batch waits for Kafka's acknowledgements of its output for as long as the broker is down: an
        idempotent producer never gives a record up. A worker stopped then waited with it, until it was
        killed. Cancelling is what a crash at that point would do, without the crash: nothing that was not
        acknowledged and stored is marked applied, and the next owner reads the batch again from the store's
        positions. A batch in flight while everything is up finishes within the grace.
        """
        grace = self._batch_app.settings.stream.stop_grace_s
        stopped_at: float | None = None

        def stopped_too_long() -> bool:
            nonlocal stopped_at
            if self._may_process(generation):
                return False
            stopped_at = stopped_at or time.monotonic()
            return time.monotonic() - stopped_at >= grace

        task = asyncio.ensure_future(attempt())
        if not await given_up(task, stopped_too_long, _STOP_CHECK_S):
            return task.result()
        log.warning("abandoned the %s call still running %.0f s after the flow stopped", what, grace)
        if not task.cancelled() and task.exception() is not None:
            log.info("the abandoned %s call ended with %r", what, task.exception())
        return ABANDONED

    # -- commits: only what the handler applied -------------------------------------------------------

    def _filter_tps_with_pending_acks(self, topics: TPorTopicSet | None = None) -> Iterator[TP]:
        return (tp for tp in self._applied if topics is None or tp in topics or tp.topic in topics)

    def _new_offset(self, tp: TP) -> int | None:
        return self._applied.get(tp)

    async def perform_seek(self) -> None:
        """Faust seeks to the Kafka committed offsets here; this consumer seeks to the store's positions
        before the first batch instead (``_prepare``). Only make sure that happens."""
        self._fetching_from_position.clear()

    # -- rebalancing and stopping -----------------------------------------------------------------------

    async def quiesce(self) -> None:
        """Stop the flow and wait until no handler call is in progress."""
        self.stop_flow()
        await self._idle.wait()

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await self.quiesce()
        # Still a member of the old generation: these commits are accepted.
        await self.commit()
        revoked = ensure_TPset(revoked)
        self._owned -= revoked
        self._forget_positions(revoked)
        for tp in revoked:
            self._applied.pop(tp, None)
        if revoked:
            try:
                await self._handler.on_revoked(revoked)
            except Exception:
                log.exception("on_revoked failed")
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._owned = ensure_TPset(assigned)
        self._forget_positions(set(self._positions))
        self._unannounced = generation_id
        await super().on_partitions_assigned(assigned, generation_id)


async def _seek_in_thread(consumer: aiokafka.AIOKafkaConsumer, wanted: Mapping[TP, int | None]) -> dict[TP, int]:
    """Runs on the consumer's own thread and loop: seek, then read back where fetching will resume.

    ``None`` means the store has no position: Kafka's committed offset, or the earliest offset.
    """
    for tp, position in wanted.items():
        atp = TopicPartition(tp.topic, tp.partition)
        offset = position if position is not None else await consumer.committed(atp)
        if offset is None:
            await consumer.seek_to_beginning(atp)
        else:
            consumer.seek(atp, offset)
    return {tp: await consumer.position(TopicPartition(tp.topic, tp.partition)) for tp in wanted}
