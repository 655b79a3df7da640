"""``rapport replay``: rebuild a namespace from the raw topics, with the live worker's own logic.

What is shared with live processing (one definition each): validation and identity resolution
(``streams.resolution``), the apply decisions and the fold (``profiles.batch`` / ``profiles.apply``), the
Redis layout (``profiles.store``). What differs:

- records are read with a plain group-less consumer, from offsets found by time, up to offsets fixed when
  the replay starts (the *plan*), and processed in one deterministic order: merged across partitions by
  (record timestamp, topic, partition, offset) and cut into chunks of a fixed number of records. Two
  replays of one plan make the same decisions (e.g. which of two customers claimed a visitor first);
- ``events.resolved`` is not used: what resolution produces is applied in this process at once, and what
  the fold emits (hand-overs, forwarded stragglers, erasures) right after, in rounds, until nothing is left.
  That is one of the orders the live topics can produce;
- watermarks are not used (``BatchFold(positional=False)``): duplicates are recognised by the stream marks
  and event ids, so replaying what a namespace already holds changes nothing, and the live worker's
  positions in it stay valid;
- rejected records are counted, not dead-lettered again (the live worker did that); segment memberships
  are evaluated with the served namespace's definitions and models, but their changes are not published
  (marketing tools must not hear history again; ``streams.replay_segments``).

**Hand-over.** A finished replay commits its plan's end offsets for the namespace's workers' consumer group
(``commit_for_workers``), so that they start where it ended rather than re-reading the retained history.

**Checkpoint and resume.** The checkpoint records the next offset of every partition, the record sequence
and the counts so far (``profiles.namespaces``). It is written in the transaction of each chunk's profiles,
and only if none of them was refused (``ProfileStore.save(if_all_written=…)``), so a replay killed or cut
off from Redis at any point resumes from its checkpoint with the same plan and neither loses nor counts
twice a chunk: the chunk in flight was written entirely with its checkpoint, or not at all.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError as AsyncKafkaError
from aiokafka.structs import TopicPartition
from kafka import KafkaConsumer
from kafka.errors import KafkaError, NoError
from kafka.structs import OffsetAndMetadata
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from profiles.batch import BatchFold, FoldFailedError
from profiles.config import FoldConfig
from profiles.namespaces import Namespaces, NamespaceStateError
from profiles.store import ProfileStore, UnreadableProfileError
from schemas.events import AnyEvent
from schemas.resolved import Resolved
from schemas.topics import ERASURES, MODEL_EXAMPLES, RAW_EVENT_TOPICS, RESOLVED, full_name
from services.erasure_log import erasures_with
from services.kafka_clients import MissingTopicsError, end_offsets_with, make_admin, make_consumer, stop_consumer
from services.settings import Settings
from streams.handler import RawRecord
from streams.outbox import key_partition
from streams.owned_states import OwnedStates
from streams.replay_models import ReplayModels, RetrainConflictError
from streams.replay_order import MergedOrder
from streams.replay_segments import ReplaySegments
from streams.resolution import Resolution, Resolver
from streams.segment_stage import chained

log = logging.getLogger(__name__)


#: What an unavailable Redis or Kafka raises in a replay: the command waits it out and resumes from its
#: checkpoint (``services.cli.replay``). Redis's other errors (a script's, a wrong type) are not outages.
OUTAGES: Final = (RedisConnectionError, RedisTimeoutError, AsyncKafkaError, KafkaError, OSError)


class PlanMismatchError(RuntimeError):
    """The namespace holds a checkpoint of another replay."""


class ReplayInterruptedError(Exception):
    """The replay was asked to stop (``Replay(stop=…)``): the chunk in flight is not written, and the same
    command resumes from the checkpoint."""


@dataclass(frozen=True)
class Plan:
    """Which records a replay covers: per raw partition ``"topic:partition"``, [start, end) offsets."""

    start: dict[str, int]
    end: dict[str, int]
    resolved_partitions: int

    @property
    def total(self) -> int:
        return sum(self.end[tp] - self.start[tp] for tp in self.start)

    def as_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "resolved_partitions": self.resolved_partitions}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Plan:
        return cls(dict(value["start"]), dict(value["end"]), int(value["resolved_partitions"]))


@dataclass
class Progress:
    """Where a replay is. The counts are of its plan, a resumed run's included."""

    done: int  # records consumed (valid, rejected or erased)
    total: int
    applied: int  # events resolved and folded
    rejected: int
    erased: int
    written: int  # profile writes (a profile rewritten by several chunks counts each time)
    elapsed_s: float  # by this command
    examples: int = 0  # labelled examples the models learned (--retrain)
    unfoldable: int = 0  # records whose fold raised (a defect) or whose stored profile is unreadable, set aside
    #: raw partitions where the namespace's workers will start reading where the replay ended
    handed_over: int = 0
    resumed_at: int = 0  # records this command found done: its rate counts only its own

    @property
    def rate(self) -> float:
        return (self.done - self.resumed_at) / self.elapsed_s if self.elapsed_s > 0 else 0.0


#: Records read, resolved and folded at a time (``Replay._chunk``).
SLICE: Final = 20_000

#: The counts a checkpoint keeps.
TALLIED: Final = ("applied", "rejected", "erased", "written", "examples", "unfoldable")


@dataclass
class Counters:
    """What a replay's plan has done so far: restored from the checkpoint by each attempt, so a chunk redone
    after an outage or a kill counts once. One object across the attempts of one command (``services.cli
    .replay`` starts one after each outage) keeps when it started and where it resumed."""

    applied: int = 0
    rejected: int = 0
    erased: int = 0
    written: int = 0
    examples: int = 0
    unfoldable: int = 0
    consumed: int = 0
    started: float = field(default_factory=time.monotonic)
    resumed_at: int | None = None

    def tally(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in TALLIED}

    def restore(self, tally: Mapping[str, int]) -> None:
        for name in TALLIED:
            setattr(self, name, int(tally.get(name, 0)))


def make_plan(
    consumer: KafkaConsumer, prefix: str, topics: Sequence[str], from_ms: int | None, to_ms: int | None
) -> Plan:
    """Offsets by time: the first record at or after ``from_ms`` (None: the oldest retained) up to the first
    at or after ``to_ms`` (None: the end now). Blocking (kafka-python)."""
    tps: list[TopicPartition] = []
    for topic in topics:
        found = consumer.partitions_for_topic(topic)
        if not found:
            raise MissingTopicsError([topic])
        tps += [TopicPartition(topic, p) for p in sorted(found)]
    first, last = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    start = _by_time(consumer, tps, from_ms, first, last)
    end = _by_time(consumer, tps, to_ms, last, last)
    resolved = consumer.partitions_for_topic(full_name(RESOLVED, prefix)) or set()
    if not resolved:
        raise MissingTopicsError([full_name(RESOLVED, prefix)])
    return Plan({_name(tp): start[tp] for tp in tps}, {_name(tp): max(end[tp], start[tp]) for tp in tps}, len(resolved))


#: The metadata of the raw offsets a replay commits for its namespace's workers: a later replay (a catch-up)
#: moves offsets that carry it, never an offset a worker committed (Faust commits an empty one).
REPLAY_COMMIT: Final = "rapport-replay"


def described(request: Mapping[str, Any]) -> str:
    """A replay's options as the command line gives them.

    >>> described({"from": None, "to": 1767225600000, "topics": ["p.events.clicks"], "retrain": True})
    '--from earliest --to 2026-01-01T00:00:00Z --topics p.events.clicks --retrain'
    """

    def instant(ms: int | None, otherwise: str) -> str:
        return otherwise if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")

    topics = " ".join(f"--topics {t}" for t in request["topics"])
    retrain = " --retrain" if request["retrain"] else ""
    return f"--from {instant(request['from'], 'earliest')} --to {instant(request['to'], 'now')} {topics}{retrain}"


def commit_for_workers(settings: Settings, group: str, offsets: Mapping[str, int]) -> dict[str, int]:
    """Commit ``offsets`` (``"topic:partition"`` → next offset) for the workers' consumer group ``group``,
    on each partition where it has no offset yet or one a replay committed, so that the namespace's workers
    start reading the raw topics where the replay ended instead of from the oldest retained record. Kafka
    refuses the commit while the group has members: running workers own their offsets. Returns what was
    committed. Blocking (kafka-python)."""
    admin = make_admin(settings, "replay-hand-over")
    try:
        tps = [_tp(name) for name in offsets]
        committed = admin.list_group_offsets({group: tps}).get(group, {})
        wanted = {
            tp: OffsetAndMetadata(offsets[_name(tp)], REPLAY_COMMIT, -1)
            for tp in tps
            if (found := committed.get(tp)) is None or found.offset < 0 or found.metadata == REPLAY_COMMIT
        }
        if not wanted:
            return {}
        try:
            errors = admin.alter_group_offsets(group, wanted)
        except KafkaError as exc:
            log.info("group %s keeps its offsets (%s): a group with members owns them", group, exc)
            return {}
        return {_name(tp): wanted[tp].offset for tp, error in errors.items() if error is NoError}
    finally:
        admin.close()


def _end_offsets(consumer: KafkaConsumer, topic: str) -> dict[int, int]:
    return {tp.partition: offset for tp, offset in end_offsets_with(consumer, [topic]).items()}


def _by_time(
    consumer: Any,
    tps: list[TopicPartition],
    at_ms: int | None,
    default: dict[TopicPartition, int],
    last: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    if at_ms is None:
        return dict(default)
    found = consumer.offsets_for_times(dict.fromkeys(tps, at_ms))
    return {tp: last[tp] if found.get(tp) is None else found[tp].offset for tp in tps}


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def _tp(name: str) -> TopicPartition:
    topic, partition = name.rsplit(":", 1)
    return TopicPartition(topic, int(partition))


def raw_topics(settings: Settings, names: Sequence[str] | None) -> list[str]:
    """The full names of the raw topics to replay (short names like ``events.clicks`` accepted)."""
    prefix = settings.kafka.topic_prefix
    known = {spec.name: full_name(spec, prefix) for spec in RAW_EVENT_TOPICS}
    if not names:
        return list(known.values())
    unknown = [n for n in names if n not in known and n not in known.values()]
    if unknown:
        raise ValueError(f"not raw event topics: {', '.join(unknown)} (known: {', '.join(known)})")
    return [known.get(n, n) for n in names]


class _Merged:
    """The plan's records in their one order (``streams.replay_order``), fetched as they are needed."""

    def __init__(self, consumer: AIOKafkaConsumer, next_offsets: dict[str, int], end: dict[str, int]) -> None:
        self.consumer = consumer
        self.order = MergedOrder(next_offsets, end)

    @property
    def next(self) -> dict[str, int]:
        return self.order.next

    def finished(self, tp: str) -> bool:
        return self.order.finished(tp)

    async def take(self, n: int) -> list[RawRecord]:
        """Up to ``n`` records in merged order (fewer only at the end of the plan)."""
        out: list[RawRecord] = []
        while len(out) < n:
            while needy := self.order.needy():
                fetched = await self.consumer.getmany(*(_tp(tp) for tp in needy), timeout_ms=1000)
                for tp in needy:
                    records = fetched.get(_tp(tp), [])
                    self.order.add(tp, records, await self.consumer.position(_tp(tp)))
            self.order.release(out, n)
            if not self.order.heap:
                break
        return out


@lru_cache(maxsize=1 << 16)
def resolved_partition(profile_id: str, partitions: int) -> int:
    """The profile's ``events.resolved`` partition, as the live worker's producer would choose it (murmur2 in
    pure Python, hence the cache)."""
    return key_partition(profile_id.encode(), partitions)


class Replay:
    def __init__(
        self,
        settings: Settings,
        store: ProfileStore,
        namespaces: Namespaces,
        chunk: int,
        *,
        models: ReplayModels | None = None,
        segments: ReplaySegments | None = None,
        counters: Counters | None = None,
        stop: asyncio.Event | None = None,
        guard: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``models``: rebuild the models too (``--retrain``, ``streams.replay_models``); ``segments``: adopt
        the served namespace's segments (and models, without ``models``) and evaluate the memberships (None:
        a replay into the served namespace, whose workers own them); ``counters``: those of an earlier
        attempt of the same command; ``stop``: once set, the replay raises ``ReplayInterruptedError`` before
        its next slice; ``guard``: awaited before each chunk, raises if the replay must stop (the command's
        lock on the namespace was taken by another replay)."""
        prefix = settings.kafka.topic_prefix
        self.settings = settings
        self.store = store
        self.namespaces = namespaces
        self.chunk = chunk
        self.slice = min(SLICE, chunk)
        self.config: FoldConfig = settings.profile.fold_config()
        self.resolver = Resolver(
            store, self.config, settings.validation.limits(), full_name(ERASURES, prefix), event_times=False
        )
        self.counters = counters or Counters()
        self.models = models
        self.segments = segments
        # The profiles this replay wrote last, decoded (the worker's rules, streams/owned_states.py): loading
        # and decoding every touched profile again for each chunk was the largest single cost of a replay.
        self.owned = OwnedStates(settings.stream.owned_profiles_cached)
        self.handed_over = 0
        #: sequence numbers of records whose fold raised (``FoldFailedError``) or whose profile does not decode
        #: (``UnreadableProfileError``): set aside when the chunk is folded again, as the live worker
        #: dead-letters them (``fold_error``, ``unreadable_profile``)
        self.unfoldable: set[int] = set()
        self.unreadable_reported: set[str] = set()  # profiles whose stored state does not decode, logged once
        self._lookups: KafkaConsumer | None = None
        self.stop = stop
        self.guard = guard
        #: what the command asked for (``plan``), kept in the checkpoint: a resume must ask for the same
        self.request: dict[str, Any] | None = None

    async def __aenter__(self) -> Replay:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the consumer of the blocking lookups (``_kafka``), if one was opened."""
        lookups, self._lookups = self._lookups, None
        if lookups is not None:
            await asyncio.to_thread(lookups.close)

    async def _kafka(self) -> KafkaConsumer:
        """One kafka-python consumer for the plan, the erasures and the hand-over's end offsets, opened at
        the first of them: each new kafka-python client waits out ``retry_backoff_ms`` (100 ms) between
        learning the broker's version and its first metadata request, ~7% of a replay of 240,362 records for
        three clients (docs/replay.md, "One Kafka client for the lookups"). Earliest: ``erasures_with``
        needs it."""
        if self._lookups is None:
            self._lookups = await asyncio.to_thread(
                make_consumer, self.settings, "replay-lookups", auto_offset_reset="earliest"
            )
        return self._lookups

    def request_for(self, topics: Sequence[str], from_ms: int | None, to_ms: int | None) -> dict[str, Any]:
        """The command's options as the checkpoint keeps them (``plan`` sets ``request``; a caller that keeps
        the plan of an earlier attempt sets it itself, or the attempt's checkpoints would lose them)."""
        return {"from": from_ms, "to": to_ms, "topics": sorted(topics), "retrain": self.models is not None}

    async def plan(self, topics: Sequence[str], from_ms: int | None, to_ms: int | None) -> Plan:
        """What to replay: the unfinished plan of the namespace's checkpoint (resume), or, after a finished
        one, from where it ended up to ``to_ms`` (catch-up), or a new plan."""
        checkpoint = await self.namespaces.checkpoint(self.store.namespace)
        self.request = self.request_for(topics, from_ms, to_ms)
        if checkpoint is not None and not checkpoint["done"]:
            # Resumed with other options, the replay would still finish the interrupted plan, and say nothing:
            # without --retrain, models trained on part of the history; with it, on the rest only.
            asked = checkpoint.get("request")  # absent from checkpoints written before session 40
            if asked is not None and asked != self.request:
                raise PlanMismatchError(
                    f"namespace {self.store.namespace!r} holds an unfinished replay of {described(asked)}: run "
                    "that again to finish it, or drop the namespace"
                )
            return Plan.from_json(checkpoint["plan"])
        prefix = self.settings.kafka.topic_prefix
        fresh = await asyncio.to_thread(make_plan, await self._kafka(), prefix, topics, from_ms, to_ms)
        if checkpoint is None:
            return fresh
        if from_ms is not None:
            log.warning(
                "%s holds a finished replay: this one catches up from where it ended, not from --from",
                self.store.namespace,
            )
        ended = dict(checkpoint["plan"]["end"])
        if set(ended) != set(fresh.start):
            raise PlanMismatchError(
                f"namespace {self.store.namespace!r} was replayed from other topics: replay those, or drop it"
            )
        return Plan(ended, {tp: max(fresh.end[tp], ended[tp]) for tp in ended}, fresh.resolved_partitions)

    async def run(self, plan: Plan, on_progress: Callable[[Progress], None] | None = None) -> Progress:
        """Replay ``plan`` into the store's namespace, resuming from its checkpoint. A plan whose records are
        all applied (an outage hit the steps after them) only runs those steps again."""
        namespace = self.store.namespace
        await self._before_chunk()  # before it writes anything (its registration); again before each chunk
        checkpoint = await self.namespaces.checkpoint(namespace)
        seq = 0 if checkpoint is None else int(checkpoint["seq"])
        if checkpoint is not None and checkpoint["plan"] == plan.as_json():
            next_offsets = dict(checkpoint["next"])
            chunk = int(checkpoint.get("chunk", self.chunk))
            # A checkpoint written before chunks were sliced: its chunks were read and folded whole.
            self._resume_chunk(chunk, int(checkpoint.get("slice", chunk)))
            self.counters.restore(checkpoint.get("counts", {}))
        elif checkpoint is not None and not checkpoint["done"]:
            raise PlanMismatchError(f"namespace {namespace!r} holds an unfinished replay of another plan")
        else:
            next_offsets = dict(plan.start)
            self.counters.restore({})
        await self.namespaces.register(namespace)
        if self.segments is not None:
            await self.segments.adopt(models=self.models is None)
        if self.models is not None:
            await self.models.start()
        self.counters.consumed = sum(next_offsets[tp] - plan.start[tp] for tp in plan.start)
        if self.counters.resumed_at is None:
            self.counters.resumed_at = self.counters.consumed
        # Every erasure first, as the live worker does: a rebuilt namespace must never hold them.
        erasures = await asyncio.to_thread(erasures_with, await self._kafka(), self.settings)
        await self.store.record_erasures(erasures)
        await self._consume(plan, next_offsets, seq, on_progress)
        if self.segments is not None:
            await self.segments.settle(self.store)
        await self._hand_over()
        group = self.settings.profile_group_of(namespace)
        try:
            self.handed_over = len(await asyncio.to_thread(commit_for_workers, self.settings, group, plan.end))
        except KafkaError as exc:
            # Everything is applied: only the workers' head start is missing, and running the replay again
            # (a catch-up with nothing to read) commits it.
            log.warning(
                "could not commit the replay's end offsets for %s (%s): its workers would read the raw topics "
                "from the oldest retained record; run the replay again to retry",
                group,
                exc,
            )
        if self.models is not None:
            examples = full_name(MODEL_EXAMPLES, self.settings.kafka.topic_prefix)
            ends = await asyncio.to_thread(_end_offsets, await self._kafka(), examples)
            await self.models.hand_over(ends.get(0, 0))
        return self._progress(plan)

    def _resume_chunk(self, interrupted: int, slice_: int) -> None:
        """A resumed replay cuts its chunks and slices as the interrupted run did: a retrain's labels resolve
        and its examples are numbered per chunk, so other boundaries would train other models than an
        uninterrupted run (the profiles would not differ)."""
        if interrupted != self.chunk:
            log.warning(
                "resuming %s with the interrupted replay's chunk of %d records, not %d",
                self.store.namespace,
                interrupted,
                self.chunk,
            )
        self.chunk, self.slice = interrupted, slice_

    async def _hand_over(self) -> None:
        """A namespace the live worker has never written starts its ``events.resolved`` partitions at their
        end now: what is there was resolved for other namespaces. (The worker re-reads the raw topics from
        the oldest record instead; the replay's stream marks make that a no-op up to where it ended.)"""
        topic = full_name(RESOLVED, self.settings.kafka.topic_prefix)
        ends = await asyncio.to_thread(_end_offsets, await self._kafka(), topic)
        if not await self.store.positions(topic, ends):
            await self.store.start_positions(topic, ends)

    async def _consume(
        self, plan: Plan, next_offsets: dict[str, int], seq: int, on_progress: Callable[[Progress], None] | None
    ) -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka.bootstrap_servers,
            client_id=f"{self.settings.kafka.client_id}-replay",
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        await consumer.start()
        try:
            consumer.assign([_tp(tp) for tp in plan.start])
            for tp, offset in next_offsets.items():
                consumer.seek(_tp(tp), offset)
            merged = _Merged(consumer, next_offsets, plan.end)

            def checkpoint(seq: int, counts: dict[str, int]) -> dict[str, Any]:
                return {
                    "plan": plan.as_json(),
                    "next": merged.next,
                    "seq": seq,
                    "done": all(merged.finished(tp) for tp in plan.start),
                    "chunk": self.chunk,
                    "slice": self.slice,
                    "counts": counts,
                    "request": self.request,
                }

            def report(in_flight: int) -> None:
                if on_progress is not None:
                    on_progress(self._progress(plan, in_flight))

            while True:
                await self._before_chunk()
                seq, taken = await self._chunk(merged, seq, plan.resolved_partitions, checkpoint, report=report)
                if not taken:  # the end of the plan: nothing to write but that it is done
                    await self.namespaces.save_checkpoint(self.store.namespace, checkpoint(seq, self.counters.tally()))
                report(0)
                if not taken or all(merged.finished(tp) for tp in plan.start):
                    return seq
        finally:
            await stop_consumer(consumer)

    async def _before_chunk(self) -> None:
        """Raise if the replay must not write another chunk: its namespace is being dropped (what it wrote would
        be deleted under it, or left behind by the drop's end), or its ``guard`` says so."""
        if await self.namespaces.is_dropping(self.store.namespace):
            raise NamespaceStateError(f"namespace {self.store.namespace!r} is being dropped: finish the drop first")
        if self.guard is not None:
            await self.guard()

    async def _chunk(
        self,
        merged: _Merged,
        seq: int,
        partitions: int,
        checkpoint: Callable[[int, dict[str, int]], dict[str, Any]],
        *,
        report: Callable[[int], None],
    ) -> tuple[int, int]:
        """Read, resolve, fold and write one chunk with the checkpoint after it (``checkpoint(seq, counts)``);
        returns the next sequence number and how many records the chunk had (0: the plan is done).
        ``report(records)`` after each slice: how many of the chunk's records are folded, not yet written.

        The chunk is read, resolved and folded a slice at a time, each slice with its rounds as a whole chunk
        of that size was before; its profiles are written once, at its end: a profile touched by every slice
        is encoded and written once instead of once per slice (6,858 writes instead of 22,093 for 480,724
        records, docs/replay.md). Reading a slice at a time keeps aiokafka fetching the next records while
        this process folds the last ones (``take`` of a whole chunk at once waited for them)."""
        resolved: list[tuple[int, Resolution]] = []  # per slice read: its records, resolved; a retry folds them
        causes = self.segments is not None and await self.segments.before_chunk()
        while True:
            tracking = None if self.models is None else await self.models.tracking(partitions)
            learned = 0 if self.models is None else self.models.learned
            # Events decoded by the slice's resolution, for its fold: not decoded twice. A retry, which has
            # let them go, decodes them from the records again.
            decoded: dict[bytes, AnyEvent] = {}
            fold = BatchFold({}, {}, self.config, positional=False, causes=causes, hooks=tracking, decoded=decoded)
            try:
                end, skipped_events = await self._fold_slices(
                    fold, decoded, merged, resolved, seq=seq, partitions=partitions, report=report
                )
                taken = sum(size for size, _ in resolved)
                if not taken:
                    return seq, 0
                ops = None
                if self.models is not None and tracking is not None:
                    ops = await self.models.after_chunk(fold, tracking, seq, self.store)
                if self.segments is not None:
                    ops = chained(await self.segments.after_chunk(fold), ops)
                writes = fold.writes(int(time.time() * 1000))
                counts = self.counters.tally()
                counts["applied"] += sum(r.kept for _, r in resolved) - skipped_events
                counts["unfoldable"] += sum(1 for at in self.unfoldable if seq < at <= end)
                counts["rejected"] += sum(len(r.refused) for _, r in resolved)
                counts["erased"] += sum(r.erased for _, r in resolved)
                counts["written"] += len(writes)
                counts["examples"] += 0 if self.models is None else self.models.learned - learned
                # One transaction per chunk: a replay killed meanwhile leaves all of the chunk and its
                # checkpoint, or none of it. Per round, a hand-over written without the round that applies it
                # would be lost on resume (the visitor's tombstone does not hand over twice).
                key = self.namespaces.checkpoint_key(self.store.namespace)
                refused = await self.store.save(
                    writes, ops, atomic=True, if_all_written=(key, orjson.dumps(checkpoint(end, counts)))
                )
            except FoldFailedError as failed:
                self.owned.drop(fold.stored)  # changed in place: the chunk again, from the stored states
                self.unfoldable.add(failed.at)
                log.error(
                    "folding record %d of the replay into %s raised (a defect): it is set aside and the chunk "
                    "folded again without it",
                    failed.at, self.store.namespace, exc_info=failed.__cause__,
                )  # fmt: skip
                continue
            except BaseException:
                self.owned.drop(fold.stored)  # changed in place, not written
                raise
            if not refused:
                self.owned.written(writes)
                self.counters.restore(counts)
                self.counters.consumed += taken
                return end, taken
            self.counters.written += len(writes) - len(refused)
            self.owned.drop(fold.stored)
            if self.models is not None:
                raise RetrainConflictError(
                    f"{len(refused)} profiles of {self.store.namespace!r} changed under the replay: retrain into a "
                    "namespace nothing else writes"
                )
            # A live worker changed these meanwhile (a replay into a namespace it writes): the chunk again, on
            # fresh states; what this attempt wrote is then recognised as repeats. Not exact in one case: a
            # visitor's tombstone written while its customer was refused does not hand over again (replay into
            # a fresh namespace, the documented path, never meets a refusal).
            log.info("%d profiles changed under the replay; folding the chunk again", len(refused))

    async def _fold_slices(
        self,
        fold: BatchFold,
        decoded: dict[bytes, AnyEvent],
        merged: _Merged,
        resolved: list[tuple[int, Resolution]],
        *,
        seq: int,
        partitions: int,
        report: Callable[[int], None],
    ) -> tuple[int, int]:
        """Fold the chunk's slices, numbered from ``seq``: those an earlier attempt read (``resolved``), then
        slices read from ``merged`` and resolved (appended to ``resolved``) until the chunk is full or the
        plan ends. ``decoded`` is the fold's: a slice's events, decoded by its resolution, are let go once it
        is folded. Returns the next number and how many of the slices' events were set aside as unfoldable."""
        skipped_events = folded = 0  # folded: records of the slices folded so far
        for at in itertools.count():
            if self.stop is not None and self.stop.is_set():
                # Checked here rather than by cancelling the task: Python 3.11's asyncio.wait_for, which
                # redis-py awaits for every command it sends, can swallow a cancellation (gh-86296), and a
                # Ctrl-C then went unnoticed until the replay had finished.
                raise ReplayInterruptedError(f"replay into {self.store.namespace!r} interrupted")
            if at == len(resolved):
                records = await merged.take(min(self.slice, self.chunk - folded)) if folded < self.chunk else []
                if not records:
                    break
                resolved.append((len(records), await self.resolver.resolve(records, datetime.now(UTC), decoded)))
            size, resolution = resolved[at]
            seq, skipped = await self._fold(fold, resolution.records, seq, partitions)
            skipped_events += skipped
            folded += size
            decoded.clear()
            report(folded)
        return seq, skipped_events

    async def _fold(self, fold: BatchFold, records: list[Resolved], seq: int, partitions: int) -> tuple[int, int]:
        """A slice's records, then what they emit (hand-overs, forwards), in rounds, until nothing is left;
        numbered from ``seq`` (a forward's origin is its position: a chunk folded again numbers the same).
        Returns the next number and how many of the slice's own events were set aside as unfoldable."""
        pending = records
        skipped_events = 0
        first = seq + len(records)
        while pending:
            profiles = list(dict.fromkeys(r.profile_id for r in pending))
            ids = [pid for pid in profiles if pid not in fold.stored]
            handed_to = [r.other_profile for r in pending if r.kind == "merge_out" and r.other_profile is not None]
            cached, missing = self.owned.split(ids)
            loaded, erased = await asyncio.gather(
                self.store.load(missing), self.store.erased(list(dict.fromkeys([*ids, *handed_to])))
            )
            fold.include({**cached, **loaded}, erased)
            partition_of = {pid: resolved_partition(pid, partitions) for pid in profiles}
            todo, pending = pending, []
            for record in todo:
                seq += 1
                if seq in self.unfoldable:
                    skipped_events += seq <= first and record.kind == "event"
                    continue
                try:
                    emitted = fold.apply(record, partition_of[record.profile_id], seq)
                except UnreadableProfileError as exc:
                    # Nothing changed: set aside as an unfoldable record, without folding the chunk again.
                    self._unreadable(exc)
                    self.unfoldable.add(seq)
                    skipped_events += seq <= first and record.kind == "event"
                    continue
                if emitted:
                    pending += emitted
        return seq, skipped_events

    def _unreadable(self, error: UnreadableProfileError) -> None:
        if error.profile_id not in self.unreadable_reported:
            self.unreadable_reported.add(error.profile_id)
            log.error("%s: its records are set aside (counted unfoldable); the profile is left as it is", error)

    def _progress(self, plan: Plan, in_flight: int = 0) -> Progress:
        """Where the replay is; ``in_flight``: records of the chunk being folded, counted as done (a progress
        bar moves with each slice; the chunk is read again if the replay stops before writing it)."""
        c = self.counters
        return Progress(
            done=c.consumed + in_flight,
            total=plan.total,
            applied=c.applied,
            rejected=c.rejected,
            erased=c.erased,
            written=c.written,
            elapsed_s=time.monotonic() - c.started,
            examples=c.examples,
            unfoldable=c.unfoldable,
            handed_over=self.handed_over,
            resumed_at=c.resumed_at or 0,
        )
