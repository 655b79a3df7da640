"""The dead-letter topic: what it holds, and re-sending the records of one reason once its cause is fixed.

``redrive`` sends a dead letter's original bytes, with its original key, back to the raw topic it came from
(so to the same partition, by the producers' key hashing), where the worker resolves it like any record.
A ``fold_error`` dead letter is an ``events.resolved`` record whose fold raised: what goes back is the raw
event it carries, to the raw topic it was read from. Only records the current settings admit are sent: a
line that is still malformed, or a purchase whose currency still has no rate, stays where it is, for a
later redrive once that is fixed. ``corrupt_resolved_record`` dead letters are not re-sent: they are no
record a worker could have written, and the raw records behind them are still in the raw topics.

**Each dead letter is re-sent at most once**, across runs and interruptions. The dead letters already
re-sent are a Redis set of their positions. A batch is sent under an *intent*, written before the first
send: the batch's positions, and the end offsets of the partitions it goes to. Once every send is
acknowledged, one transaction adds the positions to the set and deletes the intent. A redrive that finds an
intent (its predecessor died between the two) reads those partitions from the recorded offsets and adds
every position it finds in a re-sent record's ``rapport.redriven_from`` header; what it does not find was
not sent, and is selected again. Both keys share one hash tag.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from services.kafka_clients import end_offsets, make_consumer, make_producer, topic_partitions
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
    ``fold_error``, the raw event its one ``events.resolved`` record carries, to the raw topic that record was
    read from. None when there is no such record (a hand-over, an erasure, headers that say nothing).

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
        and letter.headers.reason == StageReason.FOLD_ERROR
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
    recovered: int = 0  # sent by an interrupted redrive, found and recorded by this one
    not_resendable: int = 0  # no source a redrive can send to

    def as_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "sent": sum(self.sent.values()),
            "sent_by_topic": dict(self.sent),
            "refused_again": dict(self.refused_again),
            "already_sent": self.already_sent,
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


def redrive_keys(topic: str) -> Keys:
    tag = f"rapport:dlq:{{{topic}}}"
    return Keys(f"{tag}:sent", f"{tag}:intent", f"{tag}:lock")


async def _sent(redis: Redis, topic: str) -> set[str]:
    """The positions of the dead letters already re-sent."""
    return {as_text(m) for m in await redis.smembers(redrive_keys(topic).sent)}


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


def read_letters(settings: Settings, reason: str | None = None) -> tuple[list[Letter], dict[int, int]]:
    """Every dead letter retained up to the topic's end when called (the bytes only of those of ``reason``),
    and each partition's first offset. Blocking (kafka-python)."""
    topic = dlq_topic(settings)

    def letter(record: Any) -> Letter:
        headers = read_dead_letter(record.headers or ())
        wanted = reason is not None and headers is not None and headers.reason == reason
        return Letter(record.partition, record.offset, record.key, (record.value or b"") if wanted else b"", headers)

    consumer = make_consumer(settings, "dlq")
    try:
        tps = topic_partitions(consumer, topic)
        if not tps:
            raise LookupError(f"topic {topic} does not exist on {settings.kafka.bootstrap_servers}")
        starts = consumer.beginning_offsets(tps)
        letters = _read(consumer, starts, consumer.end_offsets(tps), letter)
    finally:
        consumer.close()
    return letters, {tp.partition: offset for tp, offset in starts.items()}


def summarise(letters: Iterable[Letter], sent: set[str]) -> list[dict[str, Any]]:
    """One row per (reason, source topic): how many dead letters, how many re-sent, first and last refusal."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for letter in letters:
        reason = letter.headers.reason if letter.headers is not None else "(no reason header)"
        source = letter.headers.source if letter.headers is not None else None
        row = rows.setdefault(
            (reason, source.topic if source is not None else "-"),
            {"reason": reason, "topic": source.topic if source is not None else None, "records": 0, "re_sent": 0},
        )
        row["records"] += 1
        row["re_sent"] += letter.position in sent
        at = letter.headers.rejected_at if letter.headers is not None else ""
        if at:
            row["first_rejected_at"] = min(row.get("first_rejected_at", at), at)
            row["last_rejected_at"] = max(row.get("last_rejected_at", at), at)
    return [rows[k] for k in sorted(rows)]


async def summary(settings: Settings, redis: Redis) -> list[dict[str, Any]]:
    letters, _ = await asyncio.to_thread(read_letters, settings)
    return summarise(letters, await _sent(redis, dlq_topic(settings)))


def refusal(resend: Resend, settings: Settings, now: datetime) -> str | None:
    """The reason the current settings would refuse the record with again, or None if they admit it."""
    if resend.topic == full_name(ERASURES, settings.kafka.topic_prefix):
        erasure = decode_erasure(resend.value)
        return erasure.reason if isinstance(erasure, DeadLetter) else None
    event = admit(resend.value, now, settings.validation.limits(), settings.profile.fold_config())
    return event.reason if isinstance(event, DeadLetter) else None


async def _recover(settings: Settings, redis: Redis, topic: str) -> int:
    """Record what an interrupted redrive sent (its intent's positions found in re-sent records)."""
    sent_key, intent_key, _ = redrive_keys(topic)
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


async def redrive(settings: Settings, redis: Redis, reason: str, now: datetime, *, dry_run: bool) -> Redrive:
    """Re-send the dead letters of ``reason`` that the current settings admit, each at most once. One redrive
    of a dead-letter topic runs at a time (``LockBusyError``); a dry run takes no lock."""
    topic = dlq_topic(settings)
    if dry_run:
        done, chosen, _ = await _select(settings, redis, topic, reason, now)
        done.sent.update(resend.topic for _, resend in chosen)
        return done
    async with exclusive(redis, redrive_keys(topic).lock, LOCK_MS, what="redrive"):
        recovered = await _recover(settings, redis, topic)
        done, chosen, expired = await _select(settings, redis, topic, reason, now)
        done.recovered = recovered
        if expired:  # their dead letters left the topic (retention): nothing can select them again
            await redis.srem(redrive_keys(topic).sent, *expired)
        if not chosen:
            return done
        producer = await asyncio.to_thread(make_producer, settings)
        try:
            for start in range(0, len(chosen), BATCH):
                batch = chosen[start : start + BATCH]
                await _send(settings, redis, producer, topic, batch)
                done.sent.update(resend.topic for _, resend in batch)
        finally:
            await asyncio.to_thread(producer.close)
    return done


async def _select(
    settings: Settings, redis: Redis, topic: str, reason: str, now: datetime
) -> tuple[Redrive, list[tuple[Letter, Resend]], list[str]]:
    """The dead letters of ``reason`` to send, the others counted; and the re-sent positions that expired."""
    letters, firsts = await asyncio.to_thread(read_letters, settings, reason)
    sent = await _sent(redis, topic)
    raw_topics = resendable_topics(settings)
    resolved_topic = full_name(RESOLVED, settings.kafka.topic_prefix)
    done = Redrive(reason)
    chosen: list[tuple[Letter, Resend]] = []
    for letter in letters:
        if letter.headers is None or letter.headers.reason != reason:
            continue
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
    sent_key, intent_key, _ = redrive_keys(topic)
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
