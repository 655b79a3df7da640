"""The profile worker's batch handler: resolve raw events, apply resolved ones. The I/O around the pure core.

One consumer group reads the five raw topics, ``erasures`` and ``events.resolved``; the runtime hands each
fetch over as one batch, and this handler runs each part through its stage.

**Resolve** (raw topics and ``erasures``; the logic is ``streams.resolution``, shared with replays):
validate each record (rejects go to ``events.dlq`` with the original bytes and the reason in headers);
record the batch's erasures (markers for every id they cover, identity links forgotten); one round trip
looks up which of the batch's ids are erased (those events are refused: counted, never stored or
dead-lettered) and which anonymous ids are linked; one more claims the identifies' links and emails; the
resulting records, and an ``erase`` record for each erased profile, go to ``events.resolved``, keyed by
profile. Positions are Kafka's committed offsets: a restarted resolver sends a suffix again, which the
apply stage recognises by its raw coordinates (``profiles.apply``).

**Apply** (``events.resolved``), per batch, concurrently with the resolve stage, in this order:

1. read the partitions' positions, every touched profile and their erasure markers (one round trip); a
   position that is not where the batch starts means Redis lost writes or another worker moved on:
   ``StalePosition``, the runtime re-reads positions;
2. fold the records into the states (pure, ``profiles.batch``); records at or below a profile's watermark
   are skipped, erased profiles take nothing more and are deleted;
3. re-evaluate the changed profiles' segments (``streams.segment_stage``) and move the models' watermarks
   (``streams.model_stage``: the fold took snapshots and resolved labels on the way), then send what the
   fold, the segments and the models emit (merge hand-overs, forwarded stragglers, segment changes,
   labelled examples) and wait for Kafka's acks, so that a crash after the write below cannot lose them (a
   crash before it sends them again; receivers skip or de-duplicate);
4. write (or delete) each changed profile with a compare-and-set on its watermark, in one pipeline after
   its segment memberships and timers and the models' pending snapshots: a zombie that lost the partition
   read an older watermark and is refused (``FencedError``, retried by the runtime until revocation);
5. move the partitions' positions from the batch's start to its end (compare-and-set);
6. once the resolve stage is done too, return: the runtime then marks the offsets for Kafka's commit.

``tick`` (every ``stream.tick_interval_s``) evaluates the segment timers that are due in the partitions
this worker owns, and moves the models' event-time watermarks of those partitions (``streams.model_stage``).

Redis or Kafka failures raise out of ``handle``: the runtime pauses and retries the same batch. Nothing is
skipped and nothing infrastructural is dead-lettered. A record whose fold raises (a defect, which every
retry would meet again) is set aside: the batch is applied again at once without it, from the stored
states, and the record dead-lettered as ``fold_error``.
A record whose stored profile does not decode (``UnreadableProfileError``) changes nothing and is
dead-lettered as ``unreadable_profile``; the profile is left as it is for an operator (docs/streams.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Final

from aiokafka import AIOKafkaProducer
from faust.types import TP
from kafka.errors import KafkaError as KafkaPythonError
from redis.exceptions import RedisError

from profiles.apply import CorruptRecordError
from profiles.batch import BatchFold, FoldFailedError
from profiles.config import FoldConfig
from profiles.model_store import ModelStore
from profiles.namespaces import Namespaces, NamespaceStateError
from profiles.pending_store import PendingStore
from profiles.segment_store import SegmentStore
from profiles.store import ProfileStore, Stored, UnreadableProfileError
from schemas.resolved import DECODER, ENCODER, Envelope, RawSource, Resolved, envelopes, marker, position
from schemas.topics import DLQ, ERASURES, MODEL_EXAMPLES, RAW_EVENT_TOPICS, RESOLVED, SEGMENT_CHANGES, full_name
from services import worker_metrics
from services.erasure_log import read_erasures
from services.kafka_clients import make_async_producer, stop_producer
from services.model_cache import ModelCache
from services.redis_client import make_redis
from services.settings import Settings
from streams.backoff import OUTAGES, Backoff, through_outages
from streams.dead_letters import DeadLetter, StageReason, dead_letter
from streams.handler import Batch, MustStop, PartitionBatch, RawRecord, StalePosition
from streams.liveness import Liveness
from streams.model_stage import ModelStage, SourceProgress
from streams.outbox import Outbox, Outgoing
from streams.owned_states import OwnedStates
from streams.resolution import Resolver
from streams.segment_stage import PipelineOps, SegmentScores, SegmentStage, chained
from streams.stats import WorkerStats
from streams.tasks import all_or_none

log = logging.getLogger(__name__)


class FencedError(Exception):
    """A profile changed under this worker (it lost the partition): the batch is refused and retried."""


class ProfileHandler:
    def __init__(self, settings: Settings, store: ProfileStore, outbox: Outbox) -> None:
        prefix = settings.kafka.topic_prefix
        self.store = store
        self.outbox = outbox
        self.config: FoldConfig = settings.profile.fold_config()
        self.resolved_topic = full_name(RESOLVED, prefix)
        self.dlq_topic = full_name(DLQ, prefix)
        self.resolver = Resolver(store, self.config, settings.validation.limits(), full_name(ERASURES, prefix))
        self.stats = WorkerStats(settings.stream.stats_interval_s)
        self.owned = OwnedStates(settings.stream.owned_profiles_cached)
        specs = settings.models.specs()
        models = ModelCache(
            ModelStore(store.redis, store.namespace),
            specs,
            settings.models.secret.get_secret_value().encode(),
            settings.models.reload_s,
        )
        self.segments = SegmentStage(
            SegmentStore(store.redis, store.namespace),
            self.config,
            full_name(SEGMENT_CHANGES, prefix),
            partitions=RESOLVED.partition_count(settings.kafka.event_partitions),
            scores=SegmentScores(models, specs),
            sweep_interval_s=settings.models.segment_sweep_s,
        )
        self.resolved_partitions: set[int] = set()
        self.foreign: set[str] = set()  # other namespaces whose envelopes were seen (and skipped)
        #: (partition, position) → why: records of the batch in hand whose fold raised, dead-lettered when it is
        #: folded again without them
        self.unfoldable: dict[tuple[int, int], str] = {}
        #: profiles whose stored state does not decode, logged once by this worker
        self.unreadable_reported: set[str] = set()
        pending = PendingStore(store.redis, store.namespace)
        self.raw_topics = {full_name(spec, prefix) for spec in RAW_EVENT_TOPICS}
        self.sources = (
            SourceProgress(settings.models.idle_partition_s, settings.models.progress_interval_s)
            if settings.models.enabled
            else None
        )
        self.models = (
            ModelStage(
                pending,
                specs,
                self.config,
                (full_name(MODEL_EXAMPLES, prefix), self.resolved_topic),
                lag_ms=int(settings.models.watermark_lag_s * 1000),
                interval_s=settings.models.progress_interval_s,
            )
            if settings.models.enabled
            else None
        )
        self.clock_offset = timedelta(seconds=settings.stream.clock_offset_s)

    # The runtime's contract (streams.handler.BatchHandler).
    async def on_assigned(self, partitions: set[TP], generation: int) -> None:
        log.info("assigned %d partitions (generation %d)", len(partitions), generation)
        try:
            # Again now that the group lists this worker: a drop that marked the namespace after the check at
            # start did not see it (profiles.namespaces.Namespaces.begin_drop).
            await Namespaces(self.store.redis).refuse_writers(self.store.namespace)
        except NamespaceStateError as exc:
            log.error("%s", exc)
            raise MustStop(str(exc)) from exc
        self.owned.clear()
        self.resolved_partitions = {tp.partition for tp in partitions if tp.topic == self.resolved_topic}
        if self.sources is not None:
            self.sources.assigned(_raw_name(tp) for tp in partitions if tp.topic in self.raw_topics)
        if self.models is not None:
            self.models.resolved_partitions = await self.outbox.partition_count(self.resolved_topic)

    async def positions(self, partitions: set[TP]) -> dict[TP, int]:
        """Where to resume each events.resolved partition: Redis's position, and 0 (the oldest retained
        record) where Redis has none. Never Kafka's committed offset: after Redis loses writes, Kafka can be
        ahead of what Redis kept, and resuming there would skip events. Records applied before are skipped
        by the profiles' watermarks. Raw topics resume from Kafka's commits (their replays are harmless)."""
        resolved = [tp.partition for tp in partitions if tp.topic == self.resolved_topic]
        stored = await self.store.positions(self.resolved_topic, resolved)
        return {TP(self.resolved_topic, p): stored.get(p, 0) for p in resolved}

    async def handle(self, batch: Batch) -> None:
        started = time.monotonic()
        raw = [part for tp, part in batch.parts.items() if tp.topic != self.resolved_topic]
        resolved = [part for tp, part in batch.parts.items() if tp.topic == self.resolved_topic]
        # The two stages touch different keys and topics' records: their round trips overlap. Both are done
        # before the runtime marks any offset, which is all the commit order needs.
        stages = []
        if raw:
            stages.append(self._resolve_stage(raw))
        if resolved:
            stages.append(self._apply(resolved))
        await all_or_none(stages)
        self.stats.observe_batch(time.monotonic() - started)
        self.stats.maybe_log()

    async def on_revoked(self, partitions: set[TP]) -> None:
        log.info("revoked %d partitions", len(partitions))
        self.owned.clear()
        self.resolved_partitions -= {tp.partition for tp in partitions if tp.topic == self.resolved_topic}
        self.stats.log_and_reset()
        await self.publish_figures()

    async def tick(self, now: float, at_end: Mapping[TP, bool]) -> None:
        """Segment timers that are due, one step of evaluating existing profiles against a newly published
        segment version (raises on Redis/Kafka failure: the runtime retries), and the figures for /metrics."""
        now_ms = int((now + self.clock_offset.total_seconds()) * 1000)
        owned = self.resolved_partitions
        # One after the other: each step reads memberships the previous one wrote. Due timers first, in small
        # steps for up to a second (batches wait meanwhile), then one step of a definition's evaluation.
        until = time.monotonic() + 1.0
        more = True
        while more and time.monotonic() < until:
            changes, memberships, more = await self.segments.due(self.store, owned, now_ms)
            await self._emit(changes, memberships)
        await self._emit(*await self.segments.backfill_step(self.store, owned, now_ms))
        if self.sources is not None:
            ends = {_raw_name(tp): end for tp, end in at_end.items() if tp.topic in self.raw_topics}
            self.sources.positions(ends, time.monotonic())
            await self._send_source_marker()
        if self.models is not None and owned:
            examples, writes, markers = await self.models.tick(self.store, sorted(owned), time.monotonic())
            await self._emit(examples, writes)
            await self._announce(markers)
        self.stats.maybe_log()
        await self.publish_figures()

    def _clock_ms(self) -> int:
        """The worker's clock (wall time plus ``stream.clock_offset_s``), in ms."""
        return int((time.time() + self.clock_offset.total_seconds()) * 1000)

    async def _emit(self, changes: list[Outgoing], memberships: PipelineOps) -> None:
        await self.outbox.send(changes)  # acknowledged before the memberships that record them
        async with self.store.redis.pipeline(transaction=False) as pipe:
            memberships(pipe)
            if pipe.command_stack:
                await pipe.execute()

    async def publish_figures(self) -> None:
        totals = self.stats.take_unpublished()
        if totals.empty():
            return
        try:
            await worker_metrics.publish(self.store.redis, self.store.namespace, totals)
        except RedisError as exc:
            # Figures are not worth backpressure: keep them for the next tick.
            log.warning("could not publish worker metrics (%s); retrying at the next tick", type(exc).__name__)
            totals.add(self.stats.take_unpublished())
            self.stats.unpublished = totals

    # Resolve stage.
    async def _resolve_stage(self, parts: Sequence[PartitionBatch]) -> None:
        outgoing, event_time = await self._resolve(parts)
        await self.outbox.send(outgoing)
        if self.sources is not None:
            # After the send: a marker must follow the records it covers in every partition.
            self.sources.resolved(event_time)
            await self._send_source_marker()

    async def _send_source_marker(self) -> None:
        assert self.sources is not None
        now = time.monotonic()
        total = sum([await self.outbox.partition_count(topic) for topic in sorted(self.raw_topics)])
        if (sources := self.sources.marker(total, now)) is None:
            return
        count = await self.outbox.partition_count(self.resolved_topic)
        namespace = self.store.namespace
        await self.outbox.send(
            [(self.resolved_topic, p, None, marker(namespace, sources=sources), None) for p in range(count)]
        )
        self.sources.was_sent(sources, now)

    async def _announce(self, markers: list[Outgoing]) -> None:
        """An apply stage's markers, after the records of the batches they cover were acknowledged."""
        if self.models is not None and markers:
            await self.outbox.send(markers)
            self.models.announced_ok()

    async def _resolve(self, parts: Sequence[PartitionBatch]) -> tuple[list[Outgoing], dict[str, int]]:
        now = datetime.now(UTC) + self.clock_offset
        result = await self.resolver.resolve((r for part in parts for r in part.records), now)
        self.stats.count("resolved", result.kept)
        self.stats.count("erased_refused", result.erased)
        self.stats.count("dead_lettered", len(result.refused))
        dead = [self._dead(r.record.key, r.record.value or b"", r.source, r.reason, now) for r in result.refused]
        return dead + await self._enveloped(result.records), result.event_time

    async def _enveloped(self, records: list[Resolved]) -> list[Outgoing]:
        """Resolved records grouped by their profile's partition, in order, packed into envelopes."""
        by_partition: dict[int, list[Resolved]] = {}
        for record in records:
            partition = await self.outbox.partition_for(self.resolved_topic, record.profile_id.encode())
            by_partition.setdefault(partition, []).append(record)
        return [
            (self.resolved_topic, partition, None, envelope, None)
            for partition, group in by_partition.items()
            for envelope in envelopes(group, self.store.namespace)
        ]

    def _dead(self, key: bytes | None, value: bytes, source: RawSource, reason: DeadLetter, now: datetime) -> Outgoing:
        return (self.dlq_topic, None, key, value, dead_letter(reason, source, now))

    # Apply stage.
    async def _apply(self, parts: Sequence[PartitionBatch]) -> None:
        records = [(p.tp.partition, r) for p in parts for r in p.records]
        decoded = [self._own(_decode_envelope(r.value or b"")) for _, r in records]
        ids = (record.profile_id for envelope in decoded if envelope is not None for record in envelope.records)
        profile_ids = list(dict.fromkeys(ids))
        # A hand-over's customer may have been erased since: its marker decides what becomes of the visitor.
        handed_to = {
            r.other_profile
            for envelope in decoded
            if envelope is not None
            for r in envelope.records
            if r.kind == "merge_out" and r.other_profile is not None
        }
        while True:
            cached, missing = self.owned.split(profile_ids)
            try:
                stored_positions, loaded, erased = await self.store.read_for_apply(
                    self.resolved_topic,
                    [p.tp.partition for p in parts],
                    missing,
                    list(dict.fromkeys([*profile_ids, *handed_to])),
                )
                stale = {p.tp for p in parts if stored_positions.get(p.tp.partition, 0) != p.start}
                if stale:
                    self.owned.clear()  # Redis may have lost writes that the cached states contain
                    raise StalePosition(stale)
                await self._apply_decoded(parts, records, decoded, {**cached, **loaded}, erased)
            except FoldFailedError:
                self.owned.drop(profile_ids)  # changed in place: the batch again, from the stored states
                continue
            except BaseException:
                self.owned.drop(profile_ids)
                raise
            self.unfoldable.clear()
            return

    def _fold_record(
        self, fold: BatchFold, record: Resolved, partition: int, at: int, emitted: list[Resolved]
    ) -> tuple[str, str] | None:
        """Fold one record, adding what it emits to ``emitted``; or the reason code and message to dead-letter
        it with. A record whose fold raised is remembered and ``FoldFailedError`` raised again: the caller
        applies the batch again, from the stored states, and this record is then dead-lettered."""
        failure = self.unfoldable.get((partition, at))
        if failure is not None:
            return StageReason.FOLD_ERROR.value, failure
        try:
            emitted.extend(fold.apply(record, partition, at))
        except CorruptRecordError as exc:
            return StageReason.CORRUPT_RESOLVED_RECORD.value, str(exc)
        except UnreadableProfileError as exc:
            if exc.profile_id not in self.unreadable_reported:
                self.unreadable_reported.add(exc.profile_id)
                log.error(
                    "%s: its records are dead-lettered as unreadable_profile until it is repaired or deleted "
                    "(docs/streams.md); the profile is left as it is",
                    exc,
                )
            return StageReason.UNREADABLE_PROFILE.value, str(exc)
        except FoldFailedError as exc:
            self.unfoldable[partition, at] = str(exc)
            log.error(
                "folding the record at position %d of %s[%d] raised (a defect): it is dead-lettered as fold_error "
                "and the batch applied again without it",
                at, self.resolved_topic, partition, exc_info=exc.__cause__,
            )  # fmt: skip
            raise
        return None

    def _own(self, envelope: Envelope | None) -> Envelope | None:
        """The envelope, or an empty one if another namespace's worker sent it: that worker resolved the same
        raw records with its own links, at its own times, and this namespace's resolver sends them again.
        Folding both streams would leave it to the repeat guards, which are built for one namespace's
        resolvers (docs/streams.md)."""
        if envelope is None or envelope.namespace in ("", self.store.namespace):
            return envelope
        if envelope.namespace not in self.foreign:
            self.foreign.add(envelope.namespace)
            log.info(
                "skipping events.resolved envelopes of namespace %r: its worker shares these topics", envelope.namespace
            )
        return _SKIPPED

    async def _apply_decoded(
        self,
        parts: Sequence[PartitionBatch],
        records: list[tuple[int, RawRecord]],
        decoded: list[Envelope | None],
        stored: dict[str, Stored],
        erased: dict[str, str],
    ) -> None:
        live_segments = await self.segments.live(self._clock_ms())
        models = None
        if self.models is not None:
            models = await self.models.prepare([p.tp.partition for p in parts])
        hooks = models.tracking if models is not None else None
        fold = BatchFold(stored, erased, self.config, causes=bool(live_segments.by_name), hooks=hooks)
        emitted: list[Resolved] = []
        out: list[Outgoing] = []
        now = datetime.now(UTC)
        for (partition, raw), envelope in zip(records, decoded, strict=True):
            source = RawSource(self.resolved_topic, partition, raw.offset)
            if envelope is None:
                reason = DeadLetter(StageReason.CORRUPT_RESOLVED_RECORD.value, "", "undecodable events.resolved record")
                out.append(self._dead(raw.key, raw.value or b"", source, reason, now))
                continue
            for index, record in enumerate(envelope.records):
                unfolded = self._fold_record(fold, record, partition, position(raw.offset, index), emitted)
                if unfolded is not None:
                    # Only this record, as a one-record envelope: the envelope's other records are applied.
                    reason = DeadLetter(unfolded[0], f"records[{index}]", unfolded[1])
                    alone = ENCODER.encode(Envelope([record], namespace=envelope.namespace))
                    out.append(self._dead(raw.key, alone, source, reason, now))
            if models is not None and (envelope.sources is not None or envelope.applied is not None):
                models.observe(partition, envelope)
        out.extend(await self._enveloped(emitted))
        segment_changes, segment_writes = await self.segments.after_batch(fold, self._clock_ms())
        examples: list[Outgoing] = []
        markers: list[Outgoing] = []
        model_writes = None
        if self.models is not None and models is not None:
            examples, model_writes, markers = await self.models.after_batch(fold, models, self.store, time.monotonic())
        await self.outbox.send(out + segment_changes + examples)
        writes = fold.writes(int(time.time() * 1000))
        refused = await self.store.save(writes, before=chained(segment_writes, model_writes))
        if refused:
            raise FencedError(f"{len(refused)} profiles changed under this worker, e.g. {refused[0]}")
        moved = await self.store.move_positions(self.resolved_topic, {p.tp.partition: (p.start, p.end) for p in parts})
        if moved:
            self.owned.clear()
            raise StalePosition({TP(self.resolved_topic, p) for p in moved})
        self.owned.written(writes)
        self.stats.count("applied", len(fold.ingested))
        self.stats.observe_freshness(fold.ingested, int(time.time() * 1000))
        await self._announce(markers)


def _raw_name(tp: TP) -> str:
    return f"{tp.topic}:{tp.partition}"


#: What another namespace's envelope becomes: nothing to fold, no progress to observe.
_SKIPPED: Final = Envelope([])


def _decode_envelope(value: bytes) -> Envelope | None:
    try:
        return DECODER.decode(value)
    except Exception:
        return None


@asynccontextmanager
async def profile_handler(settings: Settings) -> AsyncIterator[ProfileHandler]:
    """The handler with its clients, for ``streams.worker.run_worker``. A worker started while Kafka or Redis
    is down waits for them here, as it waits out outages mid-run (its liveness file stays fresh), instead of
    exiting."""
    alive = Liveness(settings.stream.liveness_file)
    backoff = Backoff(settings.stream.retry_initial_s, settings.stream.retry_max_s)
    redis = make_redis(settings)
    try:
        producer = await through_outages(
            functools.partial(_started_producer, settings), backoff, "starting", alive=alive, outages=_START_OUTAGES
        )
    except BaseException:  # stopped while waiting
        await redis.aclose()
        raise
    assert producer is not None  # no stop event: it returns only once started
    try:
        store = ProfileStore(redis, settings.profile.namespace)
        refusal = functools.partial(Namespaces(redis).refuse_writers, store.namespace)
        await through_outages(refusal, backoff, "checking the namespace", alive=alive, outages=_START_OUTAGES)
        # Honour every erasure before the first event: a fresh namespace (a replay) must never hold them.
        honoured = functools.partial(_honour_erasures, settings, store)
        await through_outages(honoured, backoff, "reading the erasures", alive=alive, outages=_START_OUTAGES)
        handler = ProfileHandler(settings, store, Outbox(producer, waiting=alive))
        yield handler
        handler.stats.log_and_reset()  # the last window's figures, after the final batch
        await handler.publish_figures()
    finally:
        # Records still unacknowledged belong to batches not marked applied: they are produced again.
        await stop_producer(producer, settings.kafka.commit_timeout_s)
        await redis.aclose()


#: The start-up also reads the erasures with kafka-python, whose errors are not aiokafka's.
_START_OUTAGES: Final = (*OUTAGES, KafkaPythonError)


async def _started_producer(settings: Settings) -> AIOKafkaProducer:
    producer = make_async_producer(settings, "worker")  # a new one per attempt: a failed start is not retried
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


async def _honour_erasures(settings: Settings, store: ProfileStore) -> None:
    erasures = await asyncio.to_thread(read_erasures, settings)
    await store.record_erasures(erasures)
    log.info("honouring %d erasures", len(erasures))
