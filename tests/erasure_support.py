"""Erasure tests' helpers: raw records of identify and purchase events, resolved records applied one batch
each against the real Redis, and what a namespace still holds of some ids."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

from profiles.batch import BatchFold
from profiles.store import ProfileStore
from schemas.resolved import Resolved
from services.settings import Settings
from streams.handler import RawRecord
from streams.resolution import Resolver

NOW = datetime.now(UTC)


def resolver_of(store: ProfileStore, settings: Settings) -> Resolver:
    """A resolve stage over ``store``, with the configured fold and limits (erasure records on ``erasures``)."""
    return Resolver(store, settings.profile.fold_config(), settings.validation.limits(), "erasures")


async def apply_in_turn(
    store: ProfileStore, settings: Settings, offsets: Iterator[int], records: list[Resolved]
) -> None:
    """Each record in a batch of its own, in order, then what they emit (events.resolved is a queue whose
    next offsets are ``offsets``: one count per test, since a profile skips offsets it has applied)."""
    queue = deque(records)
    while queue:
        record = queue.popleft()
        at = next(offsets)
        pids = [record.profile_id]
        handed_to = [record.other_profile] if record.kind == "merge_out" and record.other_profile else []
        stored, erased = await asyncio.gather(store.load(pids), store.erased([*pids, *handed_to]))
        fold = BatchFold(stored, erased, settings.profile.fold_config())
        queue.extend(fold.apply(record, 0, at))
        assert await store.save(fold.writes(0)) == []


async def traces(redis: Redis, store: ProfileStore, ids: list[str]) -> list[str]:
    """The profiles and identity links of ``ids`` (a profile keyed by any of them, or by a visitor's id)."""
    out = []
    for any_id in ids:
        for key in (store.alias_key(any_id), store.email_key(any_id)):
            if await redis.exists(key):
                out.append(f"link {any_id}")
        for pid in (any_id, f"anon:{any_id}"):
            if await redis.exists(store.profile_key(pid)):
                out.append(f"profile {pid}")
    return sorted(out)


def raw(offset: int, event: dict[str, Any]) -> RawRecord:
    value = orjson.dumps(event)
    return ConsumerRecord("events.identify", 0, offset, 0, 0, None, value, None, 0, len(value), ())


def identify(event_id: str, customer: str, visitor: str, email: str) -> dict[str, Any]:
    return {
        "type": "identify",
        "event_id": event_id,
        "timestamp": NOW.isoformat(),
        "customer_id": customer,
        "anonymous_id": visitor,
        "traits": {"email": email},
    }


def purchase(event_id: str, customer: str) -> dict[str, Any]:
    return {
        "type": "purchase",
        "event_id": event_id,
        "timestamp": NOW.isoformat(),
        "customer_id": customer,
        "action": "order",
        "order_id": f"o-{event_id}",
        "currency": "EUR",
        "total": 10.0,
    }
