"""Pending snapshots in the real Redis: a worker of another feature version reads what this one wrote."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from profiles.models.labels import Pending
from profiles.models.vectors import FEATURE_NAMES, FeatureVector
from profiles.models.view import EVENT, Entry, encode_entry, new_view, pack_entry
from profiles.pending_store import CustomerWrites, PendingStore
from services.settings import Settings
from tests.redis_support import scratch_namespace

pytestmark = pytest.mark.integration


def snapshot(snapshot_id: str, feats: dict[str, float]) -> Pending:
    return Pending(
        snapshot_id=snapshot_id,
        model="m",
        profile_id="c-1",
        trigger="census",
        taken_at_ms=1_000,
        horizon_end_ms=2_000,
        features=FeatureVector.of(feats),
    )


def test_vectors_are_read_back_by_a_store_that_never_saw_their_names(settings: Settings, local_stack: object) -> None:
    asyncio.run(_check(settings))


async def _check(settings: Settings) -> None:
    async with scratch_namespace(settings, "pending") as (redis, namespace):
        # Snapshots another version took (other names) beside this version's, written by one store ...
        written = [
            snapshot("old", {"legacy_a": 1.25, "legacy_b": -3.0}),
            snapshot("new", dict.fromkeys(FEATURE_NAMES, 2.0)),
        ]
        writer = PendingStore(redis, namespace)
        async with redis.pipeline(transaction=True) as pipe:
            writer.write(
                pipe, customers=CustomerWrites(pending={"c-1": written}), watermarks={}, progress={}, ttl_s=600
            )
            await pipe.execute()
        # ... and loaded by a fresh one, which knows only the current names until it asks the registry.
        loaded = (await PendingStore(redis, namespace).load_customers({"c-1": 0})).pending
        assert loaded == {"c-1": written}
        assert loaded["c-1"][0].features.as_dict() == {"legacy_a": 1.25, "legacy_b": -3.0}

        # Without the registry those snapshots cannot be read: they are left out, the others still load.
        await redis.delete(writer.names_key)
        loaded = (await PendingStore(redis, namespace).load_customers({"c-1": 0})).pending
        assert [p.snapshot_id for p in loaded["c-1"]] == ["new"]


def test_entries_are_loaded_up_to_the_watermark_and_due_times_only_move_forward_with_due_by(
    settings: Settings, local_stack: object
) -> None:
    asyncio.run(_check_views(settings))


async def _check_views(settings: Settings) -> None:
    async with scratch_namespace(settings, "pending") as (redis, namespace):
        store = PendingStore(redis, namespace)
        entries = [Entry(at, EVENT, f"e-{at}", b'{"x": 1}') for at in (5, 3, 9, 7)]
        view = new_view("c-1")

        async def write(**changes: Any) -> None:
            async with redis.pipeline(transaction=True) as pipe:
                store.write(pipe, customers=CustomerWrites(**changes), watermarks={}, progress={}, ttl_s=600)
                await pipe.execute()

        await write(views={"c-1": view}, appended={"c-1": entries[:2]}, due=[(0, "c-1", 100)])
        await write(appended={"c-1": entries[2:]}, due_by=[(0, "c-1", 200)])  # later: the due time stays
        loaded = await store.load_customers({"c-1": 100})
        assert loaded.views == {"c-1": view}
        assert loaded.entries("c-1") == sorted(entries, key=lambda e: e.at_ms)  # in entry time order
        assert loaded.later == {}
        loaded = await store.load_customers({"c-1": 6})  # only up to the watermark; of the rest, the first time
        assert (loaded.entries("c-1"), loaded.later) == ([entries[1], entries[0]], {"c-1": 7})
        assert await store.due({0: 1_000}, 10) == {0: [("c-1", 100)]}
        extra = Entry(8, EVENT, "e-8", b"{}")
        await write(folded={"c-1": (6, [extra])}, due_by=[(0, "c-1", 50)])  # folded up to 6; earlier: it moves
        loaded = await store.load_customers({"c-1": 100})
        assert loaded.entries("c-1") == [entries[3], extra, entries[2]]
        assert await store.due({0: 1_000}, 10) == {0: [("c-1", 50)]}
        # Entries stored as a list before 2026-12-04 are still read, and moved over at the next fold.
        await redis.rpush(store.listed_entries_key("c-1"), encode_entry(Entry(1, EVENT, "e-1", b"{}")))
        loaded = await store.load_customers({"c-1": 7})
        assert [e.key for e in loaded.entries("c-1")] == ["e-1", "e-7"]
        await write(folded={"c-1": (7, [])})
        assert await redis.exists(store.listed_entries_key("c-1")) == 0
        # e-9 stored again in other bytes (uncompressed, as until 2026-12-05): read, and once.
        await redis.zadd(store.entries_key("c-1"), {pack_entry(entries[2]): entries[2].at_ms})
        assert [e.key for e in (await store.load_customers({"c-1": 100})).entries("c-1")] == ["e-8", "e-9"]
        await write(views={"c-1": None}, folded={"c-1": (None, [])}, due=[(0, "c-1", None)])  # erased
        loaded = await store.load_customers({"c-1": 1_000})
        assert (loaded.pending, loaded.views, loaded.stored_entries) == ({}, {}, {"c-1": []})
        assert await store.due({0: 1_000}, 10) == {0: []}
