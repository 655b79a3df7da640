"""The dead-letter topic: what it holds, and re-sending the records of one reason once its cause is fixed.

``redrive`` sends a dead letter's original bytes, with its original key, back to the raw topic it came from
(so to the same partition, by the producers' key hashing), where the worker resolves it like any record.
A ``fold_error`` dead letter is an ``events.resolved`` record whose fold raised, an ``unreadable_profile``
one a record whose stored profile did not decode: what goes back is the raw event it carries, to the raw
topic it was read from. Only records the current settings admit are sent: a line that is still malformed,
or a purchase whose currency still has no rate, stays where it is, for a later redrive once that is fixed.
``corrupt_resolved_record`` dead letters are not re-sent: they are no record a worker could have written,
and the raw records behind them are still in the raw topics.

**Each dead letter is re-sent at most once**, across runs and interruptions. The dead letters already
re-sent are a Redis set of their positions. A batch is sent under an *intent*, written before the first
send: the batch's positions, and the end offsets of the partitions it goes to. Once every send is
acknowledged, one transaction adds the positions to the set and deletes the intent. A redrive that finds an
intent (its predecessor died between the two) reads those partitions from the recorded offsets and adds
every position it finds in a re-sent record's ``rapport.redriven_from`` header; what it does not find was
not sent, and is selected again. Both keys share one hash tag.

**A deleted and re-created dead-letter topic** starts its offsets again, so old positions would name new
dead letters. The keys therefore carry the topic's id (Kafka's topic UUID, KIP-516) that they were recorded
for: a redrive that finds another id forgets the positions and the intent of the deleted topic before
anything else, and ``summary`` and a dry run count none of them as re-sent. Keys written before the id was
kept are taken to be of the current topic, as they were then.

**Bounded reads.** Both commands read the retained topic once, from ``since`` if given (by the time each
record was refused), and keep only what they report: a summary its rows, a redrive the dead letters of its
reason.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NamedTuple, TypeVar

import msgspec
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError
from redis.asyncio import Redis

from profiles.redis_values import as_text
from schemas.resolved import DECODER as RESOLVED_DECODER
from schemas.topics import DLQ, ERASURES, RAW_EVENT_TOPICS, RESOLVED, full_name
from schemas.validation import Rejection, decode_event
from services.kafka_clients import end_offsets, make_admin, make_consumer, make_producer, topic_partitions
from services.redis_lock import exclusive
from services.settings import Settings
from streams.dead_letters import REDRIVEN_FROM, DeadLetter, DeadLettered, StageReason, read_dead_letter
from streams.resolution import admit, decode_erasure

T = TypeVar("T")

#: Reasons whose dead letters are never re-sent.
NOT_RESENT: Final = frozenset({StageReason.CORRUPT_RESOLVED_RECORD})
#: Dead letters sent per intent: an interrupted redrive looks for at most this many.
BATCH: Final = 1_000
#: How long a redrive's lock outlives its last refresh (a holder on another host that died).
LOCK_MS: Final = 60_000
#: A read of a topic that gets no record this long while records remain gives up.
STALLED_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Letter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: DeadLettered | None

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class Resend:
    """What re-sending a dead letter sends, and where."""

    topic: str
    key: bytes | None
    value: bytes


def resend_of(letter: Letter, raw_topics: frozenset[str], resolved_topic: str) -> Resend | None:
    """The record to send back for ``letter``: itself, to the raw topic it was refused from; for a
    ``fold_error`` or an ``unreadable_profile``, the raw event its one ``events.resolved`` record carries, to the
    raw topic that record was read from. None when there is no such record (a hand-over, an erasure, headers
    that say nothing).

    >>> from schemas.resolved import RawSource
    >>> from streams.dead_letters import DeadLettered
    >>> refused = DeadLettered("malformed_json", RawSource("events.clicks", 1, 9), "")
    >>> resend_of(Letter(0, 4, b"c-1", b"{", refused), frozenset({"events.clicks"}), "events.resolved")
    Resend(topic='events.clicks', key=b'c-1', value=b'{')
    """
    source = letter.headers.source if letter.headers is not None else None
    if source is None:
        return None
    if source.topic in raw_topics:
        return Resend(source.topic, letter.key, letter.value)
    if (
        source.topic == resolved_topic
        and letter.headers is not None
        and letter.headers.reason in (StageReason.FOLD_ERROR, StageReason.UNREADABLE_PROFILE)
    ):
        return _folded_event(letter.value, raw_topics)
    return None


def _folded_event(envelope: bytes, raw_topics: frozenset[str]) -> Resend | None:
    """The raw event of a one-record ``events.resolved`` envelope (as ``fold_error`` dead letters hold)."""
    try:
        records = RESOLVED_DECODER.decode(envelope).records
    except msgspec.MsgspecError:
        return None
    record = records[0] if len(records) == 1 and records[0].kind in ("event", "forward") else None
    if record is None or record.event is None or record.source is None or record.source.topic not in raw_topics:
        return None
    event = decode_event(record.event)
    if isinstance(event, Rejection):
        return None
    return Resend(record.source.topic, event.key.encode() or None, record.event)


@dataclass(slots=True)
class Redrive:
    """What a redrive did (or, dry, would do) with the dead letters of its reason."""

    reason: str
    sent: Counter[str] = field(default_factory=Counter)  # by raw topic
    refused_again: Counter[str] = field(default_factory=Counter)  # by the reason the settings still give
    already_sent: int = 0
    forgotten: int = 0  # positions recorded for a dead-letter topic since deleted (and re-created)
    recovered: int = 0  # sent by an interrupted redrive, found and recorded by this one
    not_resendable: int = 0  # no source a redrive can send to

    def as_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "sent": sum(self.sent.values()),
            "sent_by_topic": dict(self.sent),
            "refused_again": dict(self.refused_again),
            "already_sent": self.already_sent,
            "forgotten": self.forgotten,
            "recovered": self.recovered,
            "not_resendable": self.not_resendable,
        }


def dlq_topic(settings: Settings) -> str:
    return full_name(DLQ, settings.kafka.topic_prefix)


def resendable_topics(settings: Settings) -> frozenset[str]:
    """The topics a dead letter may go back to: the raw events topics and ``erasures``."""
    prefix = settings.kafka.topic_prefix
    return frozenset(full_name(spec, prefix) for spec in (*RAW_EVENT_TOPICS, ERASURES))


class Keys(NamedTuple):
    """A dead-letter topic's redrive keys, in one hash tag (one slot for their transaction)."""

    sent: str  # the positions of the dead letters re-sent
    intent: str  # the batch being sent
    lock: str  # the redrive running: "host pid token"
    topic_id: str  # the id of the topic the other keys' positions are of


def redrive_keys(topic: str) -> Keys:
    tag = f"rapport:dlq:{{{topic}}}"
    return Keys(f"{tag}:sent", f"{tag}:intent", f"{tag}:lock", f"{tag}:topic-id")


def topic_id(settings: Settings, topic: str) -> str | None:
    """The topic's id, which changes when it is deleted and created again (None: a broker older than 2.8
    gives none). Blocking (kafka-python)."""
    admin = make_admin(settings, "dlq")
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    found = next((t for t in described if t.get("name") == topic and t.get("error_code") == 0), None)
    return None if found is None or not found.get("topic_id") else str(found["topic_id"])


async def _sent(redis: Redis, topic: str, current_id: str | None) -> set[str]:
    """The positions of the dead letters already re-sent: none if they were recorded for a deleted topic."""
    keys = redrive_keys(topic)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.topic_id)
        pipe.smembers(keys.sent)
        recorded_id, members = await pipe.execute()
    if current_id is not None and recorded_id is not None and as_text(recorded_id) != current_id:
        return set()
    return {as_text(m) for m in members}


async def _adopt(redis: Redis, topic: str, current_id: str | None) -> int:
    """Make the keys the current topic's, under the redrive's lock: the positions and the intent recorded
    for a deleted topic go. Returns how many positions went."""
    keys = redrive_keys(topic)
    recorded = await redis.get(keys.topic_id)
    if current_id is None or (recorded is not None and as_text(recorded) == current_id):
        return 0
    forgotten = 0 if recorded is None else int(await redis.scard(keys.sent))
    async with redis.pipeline(transaction=True) as pipe:
        if recorded is not None:
            pipe.delete(keys.sent, keys.intent)
        pipe.set(keys.topic_id, current_id)
        await pipe.execute()
    return forgotten


def _read(
    consumer: KafkaConsumer,
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    keep: Callable[[Any], T | None],
) -> list[T]:
    """What ``keep`` makes of each record in ``[starts, ends)`` of each partition (None: nothing), so that
    only that stays in memory. Blocking (kafka-python); raises ``KafkaTimeoutError`` after ``STALLED_S``
    without progress (the broker went away meanwhile)."""
    remaining = {tp for tp in starts if starts[tp] < ends[tp]}
    consumer.assign(list(remaining))
    for tp in remaining:
        consumer.seek(tp, starts[tp])
    out: list[T] = []
    progressed = time.monotonic()
    while remaining:
        for tp, records in consumer.poll(timeout_ms=1_000, max_records=10_000).items():
            kept = (keep(record) for record in records if record.offset < ends[tp])
            out += [item for item in kept if item is not None]
            progressed = time.monotonic()
        remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
        if remaining and time.monotonic() - progressed > STALLED_S:
            raise KafkaTimeoutError(f"no record of {sorted(map(str, remaining))} in {STALLED_S:.0f} s")
    return out


def read_letters(
    settings: Settings, keep: Callable[[Letter], T | None], since_ms: int | None = None
) -> tuple[list[T], dict[int, int]]:
    """What ``keep`` makes of each dead letter retained up to the topic's end when called (None: nothing),
    from the first refused at or after ``since_ms`` (None: the oldest retained); and each partition's first
    retained offset. Blocking (kafka-python)."""
    topic = dlq_topic(settings)

    def letter(record: Any) -> T | None:
        headers = read_dead_letter(record.headers or ())
        return keep(Letter(record.partition, record.offset, record.key, record.value or b"", headers))

    consumer = make_consumer(settings, "dlq")
    try:
        tps = topic_partitions(consumer, topic)
        if not tps:
            raise LookupError(f"topic {topic} does not exist on {settings.kafka.bootstrap_servers}")
        firsts, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        starts = firsts
        if since_ms is not None:
            found = consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            starts = {tp: ends[tp] if found.get(tp) is None else found[tp].offset for tp in tps}
        kept = _read(consumer, starts, ends, letter)
    finally:
        consumer.close()
    return kept, {tp.partition: offset for tp, offset in firsts.items()}


class Summary:
    """One row per (reason, source topic): how many dead letters, how many re-sent, first and last refusal."""

    def __init__(self, sent: set[str]) -> None:
        self.sent = sent
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, letter: Letter) -> None:
        reason = letter.headers.reason if letter.headers is not None else "(no reason header)"
        source = letter.headers.source if letter.headers is not None else None
        row = self.rows.setdefault(
            (reason, source.topic if source is not None else "-"),
            {"reason": reason, "topic": source.topic if source is not None else None, "records": 0, "re_sent": 0},
        )
        row["records"] += 1
        row["re_sent"] += letter.position in self.sent
        at = letter.headers.rejected_at if letter.headers is not None else ""
        if at:
            row["first_rejected_at"] = min(row.get("first_rejected_at", at), at)
            row["last_rejected_at"] = max(row.get("last_rejected_at", at), at)

    def table(self) -> list[dict[str, Any]]:
        return [self.rows[k] for k in sorted(self.rows)]


async def summary(settings: Settings, redis: Redis, since_ms: int | None = None) -> list[dict[str, Any]]:
    """The summary of the dead letters refused since ``since_ms`` (None: all retained)."""
    topic = dlq_topic(settings)
    rows = Summary(await _sent(redis, topic, await asyncio.to_thread(topic_id, settings, topic)))

    def count(letter: Letter) -> None:
        rows.add(letter)

    await asyncio.to_thread(read_letters, settings, count, since_ms)
    return rows.table()


def refusal(resend: Resend, settings: Settings, now: datetime) -> str | None:
    """The reason the current settings would refuse the record with again, or None if they admit it."""
    if resend.topic == full_name(ERASURES, settings.kafka.topic_prefix):
        erasure = decode_erasure(resend.value)
        return erasure.reason if isinstance(erasure, DeadLetter) else None
    event = admit(resend.value, now, settings.validation.limits(), settings.profile.fold_config())
    return event.reason if isinstance(event, DeadLetter) else None


async def _recover(settings: Settings, redis: Redis, topic: str) -> int:
    """Record what an interrupted redrive sent (its intent's positions found in re-sent records)."""
    sent_key, intent_key, _, _ = redrive_keys(topic)
    blob = await redis.get(intent_key)
    if blob is None:
        return 0
    intent = orjson.loads(blob)
    marks = {TopicPartition(t, p): offset for t, p, offset in intent["marks"]}
    found = await asyncio.to_thread(_sent_since, settings, marks, topic, set(intent["positions"]))
    async with redis.pipeline(transaction=True) as pipe:
        if found:
            pipe.sadd(sent_key, *found)
        pipe.delete(intent_key)
        await pipe.execute()
    return len(found)


def _sent_since(settings: Settings, marks: Mapping[TopicPartition, int], topic: str, wanted: set[str]) -> set[str]:
    """The positions in ``wanted`` that a record re-sent after ``marks`` names. Blocking (kafka-python)."""

    def named(record: Any) -> str | None:
        return next((value.decode() for name, value in record.headers or () if name == REDRIVEN_FROM), None)

    consumer = make_consumer(settings, "dlq-recovery")
    try:
        found = set(_read(consumer, marks, consumer.end_offsets(list(marks)), named))
    finally:
        consumer.close()
    return {position for position in wanted if f"{topic}:{position}" in found}


async def redrive(
    settings: Settings, redis: Redis, reason: str, now: datetime, *, dry_run: bool, since_ms: int | None = None
) -> Redrive:
    """Re-send the dead letters of ``reason`` refused since ``since_ms`` (None: all retained) that the
    current settings admit, each at most once. One redrive of a dead-letter topic runs at a time
    (``LockBusyError``), and one that lost its lock stops before its next batch (``LockLostError``); a dry
    run takes no lock and writes nothing."""
    topic = dlq_topic(settings)
    current_id = await asyncio.to_thread(topic_id, settings, topic)
    if dry_run:
        done, chosen, _ = await _select(settings, redis, topic, reason, now, current_id=current_id, since_ms=since_ms)
        done.sent.update(resend.topic for _, resend in chosen)
        return done
    async with exclusive(redis, redrive_keys(topic).lock, LOCK_MS, what="redrive") as held:
        forgotten = await _adopt(redis, topic, current_id)
        recovered = await _recover(settings, redis, topic)
        done, chosen, expired = await _select(
            settings, redis, topic, reason, now, current_id=current_id, since_ms=since_ms
        )
        done.recovered, done.forgotten = recovered, forgotten
        if expired:  # their dead letters left the topic (retention): nothing can select them again
            await redis.srem(redrive_keys(topic).sent, *expired)
        if not chosen:
            return done
        producer = await asyncio.to_thread(make_producer, settings)
        try:
            for start in range(0, len(chosen), BATCH):
                batch = chosen[start : start + BATCH]
                await held.check()
                await _send(settings, redis, producer, topic, batch)
                done.sent.update(resend.topic for _, resend in batch)
        finally:
            await asyncio.to_thread(producer.close)
    return done


async def _select(
    settings: Settings,
    redis: Redis,
    topic: str,
    reason: str,
    now: datetime,
    *,
    current_id: str | None,
    since_ms: int | None,
) -> tuple[Redrive, list[tuple[Letter, Resend]], list[str]]:
    """The dead letters of ``reason`` to send, the others counted; and the re-sent positions that expired."""

    def of_reason(letter: Letter) -> Letter | None:
        return letter if letter.headers is not None and letter.headers.reason == reason else None

    letters, firsts = await asyncio.to_thread(read_letters, settings, of_reason, since_ms)
    sent = await _sent(redis, topic, current_id)
    raw_topics = resendable_topics(settings)
    resolved_topic = full_name(RESOLVED, settings.kafka.topic_prefix)
    done = Redrive(reason)
    chosen: list[tuple[Letter, Resend]] = []
    for letter in letters:
        resend = resend_of(letter, raw_topics, resolved_topic)
        if letter.position in sent:
            done.already_sent += 1
        elif resend is None:
            done.not_resendable += 1
        elif (again := refusal(resend, settings, now)) is not None:
            done.refused_again[again] += 1
        else:
            chosen.append((letter, resend))
    expired = [m for m in sent if int(m.split(":")[1]) < firsts.get(int(m.split(":")[0]), 0)]
    return done, chosen, expired


async def _send(
    settings: Settings,
    redis: Redis,
    producer: KafkaProducer,
    topic: str,
    batch: Sequence[tuple[Letter, Resend]],
) -> None:
    """Send one batch under its intent, then record it (the module's docstring says why in this order)."""
    sent_key, intent_key, _, _ = redrive_keys(topic)
    targets = sorted({resend.topic for _, resend in batch})
    marks = await asyncio.to_thread(end_offsets, settings, targets, "dlq-marks")
    positions = [letter.position for letter, _ in batch]
    intent = {"positions": positions, "marks": [[tp.topic, tp.partition, offset] for tp, offset in marks.items()]}
    await redis.set(intent_key, orjson.dumps(intent))
    await asyncio.to_thread(_produce, producer, topic, batch, settings.kafka.bootstrap_timeout_s)
    await _settle(redis, sent_key, intent_key, positions)


def _produce(producer: KafkaProducer, topic: str, batch: Sequence[tuple[Letter, Resend]], timeout_s: float) -> None:
    """Send each letter back, and wait until every send is acknowledged (acks=all). Blocking (kafka-python)."""
    sends = [
        producer.send(
            resend.topic,
            value=resend.value,
            key=resend.key,
            headers=[(REDRIVEN_FROM, f"{topic}:{letter.position}".encode())],
        )
        for letter, resend in batch
    ]
    producer.flush()
    for send in sends:
        send.get(timeout=timeout_s)


async def _settle(redis: Redis, sent_key: str, intent_key: str, positions: list[str]) -> None:
    """The batch's sends were all acknowledged: record them, and drop the intent, together."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.sadd(sent_key, *positions)
        pipe.delete(intent_key)
        await pipe.execute()
