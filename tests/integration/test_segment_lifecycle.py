"""Segment memberships across a segment's and a profile's end, in the real Redis: an erased profile exits
and is forgotten, also when the segments it was in have been deleted since; a segment deleted and created
again under the same name is entered afresh by its members (its member set starts empty); segments
published together are evaluated against the existing profiles in one pass; a namespace another one was
promoted in place of keeps its memberships but publishes no change."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import ANY

import msgspec
import pytest
from redis.asyncio import Redis

import streams.segment_stage
from profiles.batch import BatchFold
from profiles.config import FoldConfig
from profiles.namespaces import SERVING, SUPERSEDED, Namespaces
from profiles.segment_store import Membership, SegmentStore
from profiles.segments import SegmentChange
from profiles.segments.membership import Reevaluation, reevaluate
from profiles.state import ProfileState, new_profile
from profiles.store import ABSENT, ProfileStore, ProfileWrite
from services.settings import Settings
from streams.outbox import Outgoing
from streams.segment_stage import FAILED_RETRY_MS, PipelineOps, SegmentStage
from tests.redis_support import scratch_namespace

pytestmark = pytest.mark.integration
NOW_MS = 1_764_000_000_000


def test_an_erased_member_of_deleted_segments_exits_them_and_is_forgotten(
    settings: Settings, local_stack: object
) -> None:
    asyncio.run(_check(settings))


async def _check(settings: Settings) -> None:
    async with scratch_namespace(settings, "segerase") as (redis, namespace):
        store = SegmentStore(redis, namespace)
        # c-1 entered "vip" (version 2) and "buyers" (1); both definitions were deleted since, and c-2, never
        # erased, is still in "buyers".
        async with redis.pipeline(transaction=True) as pipe:
            store.write_membership(pipe, "c-1", Membership({}, None), {"vip": 2, "buyers": 1}, NOW_MS - 10)
            store.write_membership(pipe, "c-2", Membership({}, None), {"buyers": 1}, NOW_MS - 10)
            await pipe.execute()
        assert await store.definitions() == {}

        stage = SegmentStage(store, FoldConfig(), "segments.changes", partitions=6)
        fold = BatchFold({}, {}, FoldConfig())
        fold.deleted["c-1"] = "er_" + "1" * 32
        fold.partition_of["c-1"] = 3
        out, ops = await stage.after_batch(fold, NOW_MS)
        await _write(redis, ops)

        changes = _decoded(out)
        assert [(c.customer_id, c.segment, c.segment_version, c.change) for c in changes] == [
            ("c-1", "buyers", 1, "exited"),
            ("c-1", "vip", 2, "exited"),
        ]
        assert {str(c.cause["erasure"]) for c in changes} == {"er_" + "1" * 32}
        assert [key for _, _, key, _, _ in out] == [b"c-1", b"c-1"]  # keyed by the customer, like every change
        assert not await redis.exists(store.profile_segments_key("c-1"))
        assert await redis.zscore(store.members_key("vip"), "c-1") is None
        assert await redis.zscore(store.members_key("buyers"), "c-1") is None
        assert (await store.memberships(["c-2"]))["c-2"].segments == {"buyers": 1}  # the others stay


def test_a_segment_created_again_is_entered_afresh_and_lists_its_new_members(
    settings: Settings, local_stack: object
) -> None:
    asyncio.run(_check_recreated(settings))


async def _check_recreated(settings: Settings) -> None:
    async with scratch_namespace(settings, "segagain") as (redis, namespace):
        store = SegmentStore(redis, namespace)
        first = await store.save("loyal", "", "transactions.orders >= 1", now_ms=NOW_MS)
        async with redis.pipeline(transaction=True) as pipe:  # c-1 entered it, as a worker would record
            store.write_membership(pipe, "c-1", Membership({}, None), {"loyal": first.version}, NOW_MS - 10)
            await pipe.execute()
        assert await store.delete("loyal")
        again = await store.save("loyal", "", "transactions.orders >= 1", now_ms=NOW_MS)
        assert (first.version, again.version, again.first_version) == (1, 2, 2)

        state = new_profile("c-1", "c-1")
        state.orders, state.last_event_ms = 2, NOW_MS - 5
        fold = BatchFold({}, {}, FoldConfig())
        fold.states["c-1"] = state
        fold.partition_of["c-1"] = 0
        fold.last_event_id["c-1"] = "e-7"
        stage = SegmentStage(store, FoldConfig(), "segments.changes", partitions=6)
        out, ops = await stage.after_batch(fold, NOW_MS)
        await _write(redis, ops)

        changes = _decoded(out)
        assert [(c.customer_id, c.segment, c.segment_version, c.change) for c in changes] == [
            ("c-1", "loyal", 2, "entered")
        ]
        assert await store.members("loyal", None, 10) == ["c-1"]
        assert (await store.memberships(["c-1"]))["c-1"].segments == {"loyal": 2}


def test_segments_published_together_are_evaluated_in_one_pass_each_with_its_own_cause(
    settings: Settings, local_stack: object
) -> None:
    asyncio.run(_check_grouped(settings))


async def _check_grouped(settings: Settings) -> None:
    async with scratch_namespace(settings, "seggroup") as (redis, namespace):
        store = SegmentStore(redis, namespace)
        await store.save("buyers", "", "transactions.orders >= 5", now_ms=NOW_MS)
        await store.save("buyers", "", "transactions.orders >= 1", now_ms=NOW_MS)  # version 2
        await store.save("repeat", "", "transactions.orders >= 2", now_ms=NOW_MS)
        states = []
        for n, orders in enumerate((1, 3, 0), start=1):
            state = new_profile(f"c-{n}", f"c-{n}")
            state.orders, state.last_event_ms = orders, NOW_MS - 5
            states.append(state)
        profiles = ProfileStore(redis, namespace)
        await profiles.save([ProfileWrite(s.profile_id, ABSENT, 0, s, True, partition=0) for s in states])

        stage = SegmentStage(store, FoldConfig(), "segments.changes", partitions=1)
        out, ops = await stage.backfill_step(profiles, {0}, NOW_MS)
        await _write(redis, ops)

        changes = _decoded(out)
        assert sorted((c.customer_id, c.segment, c.change, c.cause["definition"]) for c in changes) == [
            ("c-1", "buyers", "entered", 2),
            ("c-2", "buyers", "entered", 2),
            ("c-2", "repeat", "entered", 1),
        ]
        assert await stage.unevaluated(NOW_MS) == set(), "one step evaluated both segments"
        assert (await store.memberships(["c-2"]))["c-2"].segments == {"buyers": 2, "repeat": 1}
        assert await stage.backfill_step(profiles, {0}, NOW_MS) == ([], ANY)


def test_a_namespace_no_longer_served_keeps_its_memberships_but_publishes_no_change(
    settings: Settings, local_stack: object
) -> None:
    asyncio.run(_check_superseded(settings))


async def _check_superseded(settings: Settings) -> None:
    """The configured namespace served, then a rebuild promoted over it (whose workers now run), then a second
    rebuild over that one, then the configured one served again: each round, one new buyer in each of the
    first two namespaces. Memberships are kept throughout; only a namespace not superseded publishes."""
    async with scratch_namespace(settings, "segold") as (redis, old), scratch_namespace(settings, "segnew") as (_, new):
        stages = {}
        for namespace in (old, new):
            store = SegmentStore(redis, namespace)
            await store.save("buyers", "", "transactions.orders >= 1", now_ms=NOW_MS)
            stages[namespace] = SegmentStage(store, FoldConfig(), "segments.changes", partitions=1, refresh_s=0.0)
        namespaces, newer = Namespaces(redis), f"{new}-again"
        published: list[dict[str, list[str]]] = []
        try:
            for n, served in enumerate((old, new, newer, old), start=1):
                if n > 1:
                    await namespaces.promote(old, served)  # the API is configured with the first namespace
                published.append({})
                for namespace, stage in stages.items():
                    out, ops = await stage.after_batch(_a_buyer(f"{namespace}-c{n}"), NOW_MS)
                    await _write(redis, ops)
                    published[-1][namespace] = [c.customer_id for c in _decoded(out)]
        finally:
            await redis.delete(f"{SERVING}:{old}", *(f"{SUPERSEDED}:{ns}" for ns in (old, new, newer)))
        assert published == [
            {old: [f"{old}-c1"], new: [f"{new}-c1"]},  # nothing promoted yet (a namespace no API serves)
            {old: [], new: [f"{new}-c2"]},
            {old: [], new: []},
            {old: [f"{old}-c4"], new: []},
        ]
        for namespace, stage in stages.items():
            assert await stage.store.members("buyers", None, 10) == [f"{namespace}-c{n}" for n in range(1, 5)]


def test_an_old_worker_stops_publishing_at_the_promotion_not_at_its_next_refresh(
    settings: Settings, local_stack: object
) -> None:
    asyncio.run(_check_promoted_between_refreshes(settings))


async def _check_promoted_between_refreshes(settings: Settings) -> None:
    """The stage re-reads its definitions once an hour here: only a check made with the changes themselves
    sees a promotion between two batches."""
    async with scratch_namespace(settings, "segrefresh") as (redis, old):
        store = SegmentStore(redis, old)
        await store.save("buyers", "", "transactions.orders >= 1", now_ms=NOW_MS)
        stage = SegmentStage(store, FoldConfig(), "segments.changes", partitions=1, refresh_s=3600.0)
        published = []
        try:
            for n in (1, 2):
                if n == 2:
                    await Namespaces(redis).promote(old, f"{old}-rebuild")
                out, ops = await stage.after_batch(_a_buyer(f"c-{n}"), NOW_MS)
                await _write(redis, ops)
                published.append([c.customer_id for c in _decoded(out)])
        finally:
            await redis.delete(f"{SERVING}:{old}", f"{SUPERSEDED}:{old}")
        assert published == [["c-1"], []]
        assert await store.members("buyers", None, 10) == ["c-1", "c-2"]


def test_a_profile_whose_evaluation_raises_is_left_as_it_was_and_the_others_are_evaluated(
    settings: Settings, local_stack: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A defect in the evaluation (injected: it raises for one profile) must not fail the batch, the timer
    step or the evaluation of existing profiles, or the partition would stall: that profile keeps its
    memberships, a due timer of it comes back an hour later, and every other profile is evaluated."""

    def defective(state: ProfileState, *args: Any, **kwargs: Any) -> Reevaluation:
        if state.profile_id == "c-bad":
            raise ZeroDivisionError("injected defect")
        return reevaluate(state, *args, **kwargs)

    monkeypatch.setattr(streams.segment_stage, "reevaluate", defective)
    asyncio.run(_check_defect(settings))


async def _check_defect(settings: Settings) -> None:
    async with scratch_namespace(settings, "segdefect") as (redis, namespace):
        store = SegmentStore(redis, namespace)
        await store.save("buyers", "", "transactions.orders >= 1", now_ms=NOW_MS)
        stage = SegmentStage(store, FoldConfig(), "segments.changes", partitions=1, refresh_s=0.0)

        batch = _a_buyer("c-bad")
        batch.states["c-1"], batch.partition_of["c-1"] = _a_buyer("c-1").states["c-1"], 0
        out, ops = await stage.after_batch(batch, NOW_MS)
        await _write(redis, ops)
        assert [(c.customer_id, c.change) for c in _decoded(out)] == [("c-1", "entered")]
        assert (await store.memberships(["c-bad"]))["c-bad"].segments == {}

        profiles = ProfileStore(redis, namespace)
        states = [batch.states[pid] for pid in ("c-1", "c-bad")]
        await profiles.save([ProfileWrite(s.profile_id, ABSENT, 0, s, True, partition=0) for s in states])
        async with redis.pipeline(transaction=True) as pipe:
            for pid in ("c-1", "c-bad"):
                store.set_timer(pipe, 0, pid, NOW_MS - 1)
            await pipe.execute()
        out, ops, _ = await stage.due(profiles, {0}, NOW_MS, limit=10)
        await _write(redis, ops)
        assert _decoded(out) == []  # c-1 is in already
        assert await redis.zscore(store.timers_key(0), "c-bad") == NOW_MS + FAILED_RETRY_MS
        assert await store.due([0], NOW_MS + FAILED_RETRY_MS - 1, 10) == []

        await store.save("buyers", "", "transactions.orders >= 2", now_ms=NOW_MS)  # c-1 is out of version 2
        out, ops = await stage.backfill_step(profiles, {0}, NOW_MS)
        await _write(redis, ops)
        assert [(c.customer_id, c.change, c.segment_version) for c in _decoded(out)] == [("c-1", "exited", 2)]
        assert await stage.unevaluated(NOW_MS) == set()


def _a_buyer(pid: str) -> BatchFold:
    """A batch in which ``pid`` placed its first order."""
    buyer = new_profile(pid, pid)
    buyer.orders, buyer.last_event_ms = 1, NOW_MS - 5
    fold = BatchFold({}, {}, FoldConfig())
    fold.states[pid], fold.partition_of[pid] = buyer, 0
    return fold


async def _write(redis: Redis, ops: PipelineOps) -> None:
    """A stage's membership writes, as the worker runs them in its profile write's pipeline."""
    async with redis.pipeline(transaction=True) as pipe:
        ops(pipe)
        await pipe.execute()


def _decoded(out: list[Outgoing]) -> list[SegmentChange]:
    return [msgspec.json.decode(value, type=SegmentChange) for _, _, _, value, _ in out]
