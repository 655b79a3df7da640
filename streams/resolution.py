"""The resolve stage's logic around Redis, shared by the live worker and ``rapport replay``: validate raw
records, honour erasures, claim identify links, and turn what is left into ``events.resolved`` records.

One definition, so that a replay resolves exactly as live processing does. The caller decides where the
results go: the live worker sends them to ``events.resolved`` (and the rejects to ``events.dlq``), a
replay applies them in the same process and only counts the rejects (they were dead-lettered live).

A record whose resolution raises anything but an outage (``streams.backoff.OUTAGES``) is a defect: it passed
validation, and it would raise again on every retry of its batch, stalling the partition. The batch is then
resolved again in halves, each half on its own and split again while it raises, and a record that raises
alone is refused as ``resolve_error``, with the exception as the message; the others are resolved as usual.
Resolving is idempotent (erasure markers and claims are set-if-absent), so what a failed attempt wrote
changes nothing, and a half is a batch like any other (resolution does not depend on batching). An erasure
request refused this way is not applied by the worker: the dead-letter topic then holds it, for
``rapport dlq redrive resolve_error`` once the defect is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain

import msgspec

from profiles import identity
from profiles.config import FoldConfig
from profiles.erasure import event_ids, extending, extensions, without_erased
from profiles.store import ProfileStore
from profiles.timeutil import to_ms
from schemas import erasure as erasure_codec
from schemas.erasure import ErasureRecord
from schemas.events import AnyEvent, PurchaseEvent
from schemas.resolved import RawSource, Resolved
from schemas.validation import Rejection, ValidationLimits, validate_event
from streams.backoff import OUTAGES
from streams.dead_letters import DeadLetter, StageReason
from streams.handler import RawRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refused:
    """A raw record that goes to the dead-letter topic, and why."""

    record: RawRecord
    source: RawSource
    reason: DeadLetter


@dataclass(slots=True)
class Resolution:
    records: list[Resolved] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    kept: int = 0  # valid events resolved to a profile
    erased: int = 0  # valid events refused because an id they carry was erased
    #: ``topic:partition`` → the newest event time among the valid events read from it
    event_time: dict[str, int] = field(default_factory=dict)

    def add(self, other: Resolution) -> None:
        """``other``, of the records after this one's, added."""
        self.records += other.records
        self.refused += other.refused
        self.kept += other.kept
        self.erased += other.erased
        for name, ts in other.event_time.items():
            self.event_time[name] = max(ts, self.event_time.get(name, ts))


class Resolver:
    def __init__(
        self,
        store: ProfileStore,
        config: FoldConfig,
        limits: ValidationLimits,
        erasures_topic: str,
        *,
        event_times: bool = True,
    ) -> None:
        """``event_times``: note each partition's newest event time (``Resolution.event_time``), the live
        models' label clock; a replay, which has no use for it, saves converting every event's time."""
        self.store = store
        self.config = config
        self.limits = limits
        self.erasures_topic = erasures_topic
        self.event_times = event_times

    async def resolve(
        self, records: Iterable[RawRecord], now: datetime, decoded: dict[bytes, AnyEvent] | None = None
    ) -> Resolution:
        """Resolve raw records (in order) of the raw topics and ``erasures``. Writes erasure markers and
        identity links to Redis; raises on Redis failure (nothing is lost: the caller retries the batch).
        ``decoded`` receives each valid event by its JSON, for a caller that folds them next. A record whose
        resolution raises otherwise is refused as ``resolve_error`` (the module's docstring says how)."""
        batch = list(records)
        try:
            return await self._resolve(batch, now, decoded)
        except OUTAGES:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            if len(batch) == 1:
                record = batch[0]
                log.exception(
                    "resolving the record at %s[%d]@%d raised (a defect): it is refused as resolve_error",
                    record.topic, record.partition, record.offset,
                )  # fmt: skip
                why = DeadLetter(StageReason.RESOLVE_ERROR.value, "", f"{type(exc).__name__}: {exc}")
                return Resolution(refused=[Refused(record, _source(record), why)])
            log.warning("resolving %d records raised (a defect): resolving each half on its own", len(batch))
        middle = len(batch) // 2
        out = await self.resolve(batch[:middle], now, decoded)
        out.add(await self.resolve(batch[middle:], now, decoded))
        return out

    async def _resolve(
        self, records: list[RawRecord], now: datetime, decoded: dict[bytes, AnyEvent] | None
    ) -> Resolution:
        out = Resolution()
        arrivals: list[identity.Arrival] = []
        erasures: list[ErasureRecord] = []
        newest: dict[tuple[str, int], int] = {}  # named once per partition below, not once per event
        for record in records:
            value = record.value or b""
            source = _source(record)
            if record.topic == self.erasures_topic:
                erasure = decode_erasure(value)
                if isinstance(erasure, DeadLetter):
                    out.refused.append(Refused(record, source, erasure))
                else:
                    erasures.append(erasure)
                continue
            event = admit(value, now, self.limits, self.config)
            if isinstance(event, DeadLetter):
                out.refused.append(Refused(record, source, event))
            else:
                arrivals.append(identity.Arrival(source, value, event, record.timestamp))
                if decoded is not None:
                    decoded[value] = event
                if self.event_times:
                    ts = to_ms(event.timestamp)
                    if ts > newest.get((record.topic, record.partition), -1):
                        newest[record.topic, record.partition] = ts
        out.event_time = {f"{topic}:{partition}": ts for (topic, partition), ts in newest.items()}
        # Erasures first: events in the same batch must already see them.
        await self.store.record_erasures(erasures)
        carried = list(dict.fromkeys(chain.from_iterable(event_ids(a.event) for a in arrivals)))
        erased, linked = await self.store.lookup(carried, identity.anonymous_only(arrivals))
        suspects = extending((a.event for a in arrivals), erased.keys())
        owners = await self.store.link_owners(suspects) if suspects else {}
        at_ms = int(now.timestamp() * 1000)
        extended = extensions((a.event for a in arrivals), erased, at_ms=at_ms, owners=owners)
        if extended:
            await self.store.record_erasures(extended)
            erasures += extended
            erased.update({i: r.erasure_id for r in extended for i in r.ids})
        kept = _without_erased(arrivals, erased.keys(), decoded)
        claimed, named = identity.claims(kept), identity.named_emails(kept)
        outcomes, accepted = await self.store.link(claimed, named, self.config.link_limits)
        out.records = identity.resolve(kept, outcomes, accepted, identity.linked_after(linked, claimed, outcomes))
        out.records += [
            Resolved(kind="erase", profile_id=pid, other_profile=erasure.erasure_id)
            for erasure in erasures
            for pid in erasure.profile_ids
        ]
        out.kept = len(kept)
        out.erased = len(arrivals) - len(kept)
        return out


def admit(value: bytes, now: datetime, limits: ValidationLimits, config: FoldConfig) -> AnyEvent | DeadLetter:
    """The event a raw events record carries, or why the resolve stage refuses it before identity.

    >>> from datetime import UTC, datetime
    >>> line = b'{"event_id": "e-1", "type": "purchase", "customer_id": "c-1", "action": "order",'
    >>> line += b' "order_id": "o-1", "currency": "JPY", "total": 1000, "timestamp": "2026-01-01T00:00:00Z"}'
    >>> now = datetime(2026, 1, 2, tzinfo=UTC)
    >>> admit(line, now, ValidationLimits(), FoldConfig()).reason
    'unsupported_currency'
    >>> admit(line, now, ValidationLimits(), FoldConfig(fx_rates={"EUR": 1.0, "JPY": 0.0062})).event_id
    'e-1'
    """
    event = validate_event(value, now=now, limits=limits)
    if isinstance(event, Rejection):
        return DeadLetter.from_rejection(event)
    if isinstance(event, PurchaseEvent) and event.currency not in config.fx_rates:
        return DeadLetter(
            StageReason.UNSUPPORTED_CURRENCY.value, "currency", f"no rate configured for {event.currency}"
        )
    return event


def decode_erasure(value: bytes) -> ErasureRecord | DeadLetter:
    """The erasure an ``erasures`` record carries, or why it is refused."""
    try:
        return erasure_codec.decode(value)
    except msgspec.MsgspecError as exc:
        return DeadLetter(StageReason.INVALID_ERASURE.value, "", str(exc))


def _source(record: RawRecord) -> RawSource:
    return RawSource(record.topic, record.partition, record.offset)


def _without_erased(
    arrivals: list[identity.Arrival], erased: Collection[str], decoded: dict[bytes, AnyEvent] | None
) -> list[identity.Arrival]:
    """The arrivals to resolve: erased customers' events out, erased ids taken out of the others' (their
    JSON encoded again: it is what ``events.resolved`` carries)."""
    if not erased:
        return arrivals
    kept: list[identity.Arrival] = []
    for arrival in arrivals:
        event = without_erased(arrival.event, erased)
        if event is None:
            continue
        if event is arrival.event:
            kept.append(arrival)
            continue
        raw = msgspec.json.encode(event)
        kept.append(identity.Arrival(arrival.source, raw, event, arrival.ingested_ms))
        if decoded is not None:
            decoded[raw] = event
    return kept
