"""The profile worker's batch handler: resolve raw events, apply resolved ones. The I/O around the pure core.

One consumer group reads the five raw topics and ``events.resolved``; the runtime hands each fetch over as
one batch, and this handler runs each part through its stage.

**Resolve** (raw topics): validate each record (rejects go to ``events.dlq`` with the original bytes and
the reason in headers), claim identify links and look up linked anonymous ids in Redis (one pipelined
round trip each), and send the resulting records to ``events.resolved``, keyed by profile. Positions are
Kafka's committed offsets: a restarted resolver sends a suffix again, which the apply stage recognises by
its raw coordinates (``profiles.apply``).

**Apply** (``events.resolved``), per batch, in this order:

1. read the partitions' positions and every touched profile (pipelined); a position that is not where the
   batch starts means Redis lost writes or another worker moved on: ``StalePosition``, the runtime
   re-reads positions;
2. fold the records into the states (pure); records at or below a profile's watermark are skipped;
3. send what the fold emits (merge hand-overs, forwarded stragglers) and wait for Kafka's acks, so that a
   crash after the write below cannot lose them (a crash before it sends them again; receivers skip);
4. write each changed profile with a compare-and-set on its watermark: a zombie that lost the partition
   read an older watermark and is refused (``FencedError``, retried by the runtime until revocation);
5. move the partitions' positions from the batch's start to its end (compare-and-set);
6. return: the runtime then marks the offsets for Kafka's commit.

Redis or Kafka failures raise out of ``handle``: the runtime pauses and retries the same batch. Nothing is
skipped and nothing infrastructural is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from faust.types import TP

from profiles import identity
from profiles.apply import CorruptRecordError, apply_resolved, new_state_for
from profiles.config import FoldConfig
from profiles.fold import compact
from profiles.state import ProfileState
from profiles.store import ProfileStore
from schemas.events import PurchaseEvent
from schemas.resolved import DECODER, ENCODER, RawSource, Resolved
from schemas.topics import DLQ, RAW_EVENT_TOPICS, RESOLVED, full_name
from schemas.validation import Rejection, validate_event
from services.redis_client import make_redis
from services.settings import Settings
from streams.dead_letters import DeadLetter, dead_letter
from streams.handler import Batch, PartitionBatch, StalePosition

log = logging.getLogger(__name__)

Outgoing = tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]  # topic, key, value, headers


class FencedError(Exception):
    """A profile changed under this worker (it lost the partition): the batch is refused and retried."""


class ProfileHandler:
    def __init__(self, settings: Settings, store: ProfileStore, producer: AIOKafkaProducer) -> None:
        prefix = settings.kafka.topic_prefix
        self.store = store
        self.producer = producer
        self.config: FoldConfig = settings.profile.fold_config()
        self.limits = settings.validation.limits()
        self.raw_topics = {full_name(spec, prefix) for spec in RAW_EVENT_TOPICS}
        self.resolved_topic = full_name(RESOLVED, prefix)
        self.dlq_topic = full_name(DLQ, prefix)

    # The runtime's contract (streams.handler.BatchHandler).
    async def on_assigned(self, partitions: set[TP], generation: int) -> None:
        log.info("assigned %d partitions (generation %d)", len(partitions), generation)

    async def positions(self, partitions: set[TP]) -> dict[TP, int]:
        resolved = [tp.partition for tp in partitions if tp.topic == self.resolved_topic]
        stored = await self.store.positions(self.resolved_topic, resolved)
        return {TP(self.resolved_topic, p): offset for p, offset in stored.items()}

    async def handle(self, batch: Batch) -> None:
        raw = [part for tp, part in batch.parts.items() if tp.topic in self.raw_topics]
        resolved = [part for tp, part in batch.parts.items() if tp.topic == self.resolved_topic]
        if raw:
            await self._send(await self._resolve(raw))
        if resolved:
            await self._apply(resolved)

    async def on_revoked(self, partitions: set[TP]) -> None:
        log.info("revoked %d partitions", len(partitions))

    async def tick(self, now: float) -> None:
        """Time-driven work (window exits, label horizons) arrives with the segments and models stages."""

    # Resolve stage.
    async def _resolve(self, parts: Sequence[PartitionBatch]) -> list[Outgoing]:
        now = datetime.now(UTC)
        out: list[Outgoing] = []
        arrivals: list[identity.Arrival] = []
        for part in parts:
            for record in part.records:
                value = record.value or b""
                source = RawSource(record.topic, record.partition, record.offset)
                event = validate_event(value, now=now, limits=self.limits)
                if isinstance(event, Rejection):
                    out.append(self._dead(record.key, value, source, DeadLetter.from_rejection(event), now))
                elif isinstance(event, PurchaseEvent) and event.currency not in self.config.fx_rates:
                    reason = DeadLetter("unsupported_currency", "currency", f"no rate configured for {event.currency}")
                    out.append(self._dead(record.key, value, source, reason, now))
                else:
                    arrivals.append(identity.Arrival(source, value, event))
        outcomes = await self.store.claim_links(identity.claims(arrivals))
        await self.store.link_emails(identity.emails(arrivals))
        linked = await self.store.linked_customers(identity.anonymous_only(arrivals))
        for record in identity.resolve(arrivals, outcomes, linked):
            out.append((self.resolved_topic, record.profile_id.encode(), ENCODER.encode(record), None))
        return out

    def _dead(self, key: bytes | None, value: bytes, source: RawSource, reason: DeadLetter, now: datetime) -> Outgoing:
        return (self.dlq_topic, key, value, dead_letter(reason, source, now))

    # Apply stage.
    async def _apply(self, parts: Sequence[PartitionBatch]) -> None:
        stored_positions = await self.store.positions(self.resolved_topic, [p.tp.partition for p in parts])
        stale = {p.tp for p in parts if stored_positions.get(p.tp.partition, p.start) != p.start}
        if stale:
            raise StalePosition(stale)
        decoded: list[tuple[int, int, Resolved | None, bytes | None, bytes]] = []
        for part in parts:
            for record in part.records:
                value = record.value or b""
                try:
                    decoded.append((part.tp.partition, record.offset, DECODER.decode(value), record.key, value))
                except Exception:
                    decoded.append((part.tp.partition, record.offset, None, record.key, value))
        profile_ids = list(dict.fromkeys(r.profile_id for _, _, r, _, _ in decoded if r is not None))
        stored = await self.store.load(profile_ids)
        states: dict[str, ProfileState] = {}
        watermarks = {pid: s.watermark for pid, s in stored.items()}
        changed: set[str] = set()
        out: list[Outgoing] = []
        now = datetime.now(UTC)
        for partition, offset, record, key, value in decoded:
            source = RawSource(self.resolved_topic, partition, offset)
            if record is None:
                out.append(
                    self._dead(key, value, source, DeadLetter("corrupt_resolved_record", "", "undecodable"), now)
                )
                continue
            pid = record.profile_id
            if offset <= watermarks[pid]:
                continue  # applied before: a redelivery after a crash or rebalance
            state = states.get(pid) or stored[pid].state or new_state_for(pid)
            try:
                state, emitted = apply_resolved(state, record, partition=partition, offset=offset, config=self.config)
            except CorruptRecordError as exc:
                out.append(self._dead(key, value, source, DeadLetter("corrupt_resolved_record", "", str(exc)), now))
                continue
            states[pid] = state
            watermarks[pid] = offset
            changed.add(pid)
            out.extend((self.resolved_topic, r.profile_id.encode(), ENCODER.encode(r), None) for r in emitted)
        await self._send(out)
        updated_ms = int(time.time() * 1000)
        writes = []
        for pid in changed:
            state = states[pid]
            compact(state, self.config)
            state.updated_ms = updated_ms
            writes.append((pid, stored[pid].expected, watermarks[pid], state))
        refused = [w[0] for w, ok in zip(writes, await self.store.save(writes), strict=True) if not ok]
        if refused:
            raise FencedError(f"{len(refused)} profiles changed under this worker, e.g. {refused[0]}")
        moved = await self.store.move_positions(self.resolved_topic, {p.tp.partition: (p.start, p.end) for p in parts})
        if moved:
            raise StalePosition({TP(self.resolved_topic, p) for p in moved})

    async def _send(self, records: list[Outgoing]) -> None:
        """Send and wait until Kafka has every record (acks=all, idempotent producer)."""
        pending = [await self.producer.send(t, value=v, key=k, headers=h) for t, k, v, h in records]
        if pending:
            await asyncio.gather(*pending)


@asynccontextmanager
async def profile_handler(settings: Settings) -> AsyncIterator[ProfileHandler]:
    """The handler with its clients, for ``streams.worker.run_worker``."""
    redis = make_redis(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        client_id=f"{settings.kafka.client_id}-worker",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    try:
        yield ProfileHandler(settings, ProfileStore(redis, settings.profile.namespace), producer)
    finally:
        await producer.stop()
        await redis.aclose()
