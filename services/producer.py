"""Validating events and producing them to their raw topics: the engine behind ``rapport produce``.

Every line is validated with the same contract the stream uses; rejected lines are counted by reason and
not sent, unless the caller asks to send them as a faulty client would (``send_rejected``: the demo does,
so that the worker's dead-letter topic has something to show). Accepted events go to the raw topic of
their ``type``, keyed by ``customer_id`` (else ``anonymous_id``) so that one customer's events stay in one
partition, in order. The producer is
idempotent with ``acks=all``: a retried batch is not duplicated and a send only counts once the broker's
in-sync replicas have it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from kafka import KafkaProducer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from schemas.topics import TOPIC_BY_EVENT_TYPE, full_name
from schemas.validation import Rejection, ValidationLimits, validate_event
from services.kafka_clients import make_producer, require_topics
from services.settings import Settings

RejectHandler = Callable[[int, bytes, Rejection], None]


@dataclass
class ProduceSummary:
    read: int = 0
    sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    per_topic: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def produce_lines(
    lines: Iterable[bytes],
    settings: Settings,
    *,
    rate: float | None = None,
    progress: bool = False,
    total: int | None = None,
    on_reject: RejectHandler | None = None,
    send_rejected: bool = False,
) -> ProduceSummary:
    """Validate and send every non-blank line; block until the broker has acknowledged all of them.

    ``send_rejected``: a rejected line is sent too, as it is, to where a client would have sent it
    (``misrouted``), and counted in ``rejected`` and ``sent``."""
    summary = ProduceSummary()
    prefix = settings.kafka.topic_prefix
    topics = {kind: full_name(spec, prefix) for kind, spec in TOPIC_BY_EVENT_TYPE.items()}
    router = _Router(settings.validation.limits(), topics, summary, on_reject, send_rejected)
    failures: list[BaseException] = []
    require_topics(settings, topics.values())
    producer = make_producer(settings)
    started = time.monotonic()
    pacer = _Pacer(producer, rate, started) if rate else None
    bar = _progress(total) if progress else None
    task = bar.add_task("producing", total=total, rate=0.0) if bar else None
    try:
        if bar:
            bar.start()
        for number, line in enumerate(lines, start=1):
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            summary.read += 1
            routed = router.route(number, raw)
            if routed is None:
                continue
            topic, key, value = routed
            if pacer:
                pacer.before_send(topic)
            producer.send(topic, key=key, value=value).add_errback(failures.append)
            summary.sent += 1
            summary.per_topic[topic] += 1
            if pacer:
                pacer.after_send(summary.sent)
            if bar and task is not None and summary.read % 1000 == 0:
                bar.update(task, completed=summary.read, rate=summary.sent / (time.monotonic() - started))
        producer.flush()
    finally:
        producer.close()
        if bar:
            if task is not None:
                bar.update(task, completed=summary.read)
            bar.stop()
    summary.failed = len(failures)
    summary.seconds = time.monotonic() - started
    return summary


@dataclass
class _Router:
    """Where each line goes: ``(topic, key, value)``, or None for a line not to send."""

    limits: ValidationLimits
    topics: dict[str, str]
    summary: ProduceSummary
    on_reject: RejectHandler | None
    send_rejected: bool

    def route(self, number: int, raw: bytes) -> tuple[str, bytes | None, bytes] | None:
        now = datetime.now(UTC)
        result = validate_event(raw, now=now, limits=self.limits)
        if isinstance(result, Rejection):
            self.summary.rejected[result.code.value] += 1
            if self.on_reject:
                self.on_reject(number, raw, result)
            return (*misrouted(raw, self.topics), raw) if self.send_rejected else None
        if result.received_at is None:
            raw = _stamp_received_at(raw, now)
        return self.topics[result.type], result.key.encode(), raw


def misrouted(raw: bytes, topics: Mapping[str, str]) -> tuple[str, bytes | None]:
    """The raw topic and key a client would send a line the contract rejects with: its ``type``'s topic and
    its id when they can be read, else the clicks topic (web clients send the most) and no key.

    >>> topics = {"click": "events.clicks", "purchase": "events.purchases"}
    >>> misrouted(b'{"type": "purchase", "customer_id": "c-1", "total": "lots"}', topics)
    ('events.purchases', b'c-1')
    >>> misrouted(b'{"type": "purchase", "customer_id": ', topics)
    ('events.clicks', None)
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        return topics["click"], None
    kind = value.get("type")
    topic = topics.get(kind, topics["click"]) if isinstance(kind, str) else topics["click"]
    key = value.get("customer_id") or value.get("anonymous_id")
    return topic, key.encode() if isinstance(key, str) and key else None


def _stamp_received_at(raw: bytes, now: datetime) -> bytes:
    """A collector stamps arrival time; events that already carry one keep it (replays of history)."""
    event = orjson.loads(raw)
    event["received_at"] = now.isoformat(timespec="milliseconds")
    return orjson.dumps(event)


class _Pacer:
    """Holds the sends to ``rate`` per second. A topic's first send waits for the topic's metadata (~100 ms
    with kafka-python, measured): that wait is left out of the schedule, or the lines queued behind it would
    go out in one burst to catch up (a burst that showed in the profile worker's freshness benchmark)."""

    def __init__(self, producer: KafkaProducer, rate: float, started: float) -> None:
        self.producer = producer
        self.rate = rate
        self.started = started
        self.known: set[str] = set()

    def before_send(self, topic: str) -> None:
        if topic not in self.known:
            waited = time.monotonic()
            self.producer.partitions_for(topic)
            self.started += time.monotonic() - waited
            self.known.add(topic)

    def after_send(self, sent: int) -> None:
        ahead = self.started + sent / self.rate - time.monotonic()
        # Sleeping below a millisecond costs more than it paces.
        if ahead > 0.001:
            time.sleep(ahead)


def _progress(total: int | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9,.0f} ev/s"),
        TimeRemainingColumn(),
        transient=False,
    )
