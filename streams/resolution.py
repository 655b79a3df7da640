"""The resolve stage's logic around Redis, shared by the live worker and ``rapport replay``: validate raw
records, honour erasures, claim identify links, and turn what is left into ``events.resolved`` records.

One definition, so that a replay resolves exactly as live processing does. The caller decides where the
results go: the live worker sends them to ``events.resolved`` (and the rejects to ``events.dlq``), a
replay applies them in the same process and only counts the rejects (they were dead-lettered live).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

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
from streams.dead_letters import DeadLetter
from streams.handler import RawRecord


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


class Resolver:
    def __init__(self, store: ProfileStore, config: FoldConfig, limits: ValidationLimits, erasures_topic: str) -> None:
        self.store = store
        self.config = config
        self.limits = limits
        self.erasures_topic = erasures_topic

    async def resolve(
        self, records: Iterable[RawRecord], now: datetime, decoded: dict[bytes, AnyEvent] | None = None
    ) -> Resolution:
        """Resolve raw records (in order) of the raw topics and ``erasures``. Writes erasure markers and
        identity links to Redis; raises on Redis failure (nothing is lost: the caller retries the batch).
        ``decoded`` receives each valid event by its JSON, for a caller that folds them next."""
        out = Resolution()
        arrivals: list[identity.Arrival] = []
        erasures: list[ErasureRecord] = []
        newest: dict[tuple[str, int], int] = {}  # named once per partition below, not once per event
        for record in records:
            value = record.value or b""
            source = RawSource(record.topic, record.partition, record.offset)
            if record.topic == self.erasures_topic:
                erasure = _decode_erasure(value)
                if isinstance(erasure, DeadLetter):
                    out.refused.append(Refused(record, source, erasure))
                else:
                    erasures.append(erasure)
                continue
            event = validate_event(value, now=now, limits=self.limits)
            if isinstance(event, Rejection):
                out.refused.append(Refused(record, source, DeadLetter.from_rejection(event)))
            elif isinstance(event, PurchaseEvent) and event.currency not in self.config.fx_rates:
                reason = DeadLetter("unsupported_currency", "currency", f"no rate configured for {event.currency}")
                out.refused.append(Refused(record, source, reason))
            else:
                arrivals.append(identity.Arrival(source, value, event, record.timestamp))
                if decoded is not None:
                    decoded[value] = event
                ts = to_ms(event.timestamp)
                if ts > newest.get((record.topic, record.partition), -1):
                    newest[record.topic, record.partition] = ts
        out.event_time = {f"{topic}:{partition}": ts for (topic, partition), ts in newest.items()}
        # Erasures first: events in the same batch must already see them.
        await self.store.record_erasures(erasures)
        carried = list(dict.fromkeys(i for a in arrivals for i in event_ids(a.event)))
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
        claimed = identity.claims(kept)
        outcomes = await self.store.link(claimed, identity.emails(kept))
        out.records = identity.resolve(kept, outcomes, identity.linked_after(linked, claimed, outcomes))
        out.records += [
            Resolved(kind="erase", profile_id=pid, other_profile=erasure.erasure_id)
            for erasure in erasures
            for pid in erasure.profile_ids
        ]
        out.kept = len(kept)
        out.erased = len(arrivals) - len(kept)
        return out


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


def _decode_erasure(value: bytes) -> ErasureRecord | DeadLetter:
    try:
        return erasure_codec.decode(value)
    except msgspec.MsgspecError as exc:
        return DeadLetter("invalid_erasure", "", str(exc))
