"""Erasure end to end: erase 100 customers through the API while their traffic keeps flowing, then rebuild
the raw topics into fresh namespaces (a fresh worker on a copy of the topics, and ``rapport replay``): no
namespace holds anything of them, every id of theirs answers 404, and every other profile is the same in
all of them."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from profiles.config import HOUR_MS
from profiles.pending_store import PendingStore
from profiles.read import read_profiles
from profiles.segment_store import SegmentStore
from profiles.state import anonymous_profile_id
from profiles.store import ProfileStore
from schemas.topics import ERASURES, RAW_EVENT_TOPICS
from schemas.validation import Rejection, ValidationLimits, validate_event
from services.redis_client import make_redis
from tests.api_support import create_key, running_api
from tests.kafka_support import Topics, copy_topics, created_topics, produce_raw, rapport
from tests.oracle import OracleSettings, build_profiles, diff_profiles
from tests.worker_support import Worker, define_segments, stored_views, wait_until_caught_up

pytestmark = pytest.mark.timeout(900)
ERASED = 100
SEGMENTS = {"buyers": "transactions.orders >= 1", "visitors": "behaviour.sessions >= 1"}  # not moved by the clock


def test_erased_customers_never_come_back_live_or_in_a_rebuild(tmp_path: Path, topics: Topics) -> None:
    events_file = tmp_path / "events.jsonl"
    sim = rapport(
        "simulate", "--customers", "400", "--days", "30", "--seed", "5", "--out", str(events_file), env=topics.env
    )
    assert sim.returncode == 0, sim.stderr
    lines = [line for line in events_file.read_bytes().splitlines() if line.strip()]
    first, rest = lines[: len(lines) // 2], lines[len(lines) // 2 :]
    now = datetime.now(UTC)

    def valid(part: list[bytes]) -> list[dict[str, Any]]:
        limits = ValidationLimits()
        return [orjson.loads(v) for v in part if not isinstance(validate_event(v, now=now, limits=limits), Rejection)]

    events = valid(lines)
    latest = max(int(datetime.fromisoformat(v["timestamp"]).timestamp() * 1000) for v in events)
    as_of = (latest // HOUR_MS + 2) * HOUR_MS
    everyone = build_profiles(events, as_of_ms=as_of, settings=OracleSettings())
    seen_early = {v.get("customer_id") for v in valid(first)}
    chosen = sorted(
        (v for pid, v in everyone.items() if v["customer_id"] and pid in seen_early),
        key=lambda v: str(v["customer_id"]),
    )[:ERASED]
    assert len(chosen) == ERASED
    # Every id the whole stream ever ties to them, including ids first seen after the erasure.
    their_ids = {str(i) for v in chosen for i in (v["customer_id"], *v["anonymous_ids"], *v["emails"])}
    profile_ids = {str(v["customer_id"]) for v in chosen} | {
        anonymous_profile_id(str(a)) for v in chosen for a in v["anonymous_ids"]
    }

    live = f"live-{uuid.uuid4().hex[:6]}"
    env = {**topics.env, "RAPPORT_PROFILE__NAMESPACE": live, "RAPPORT_API__KEY_CACHE_S": "0"}
    token = create_key(env, "--name", "eraser", "--scopes", "admin", "--rate-limit", "1000")
    define_segments(topics.settings, live, SEGMENTS)  # memberships name their members: they must go too
    worker = Worker(topics, live, tmp_path / "live")
    (tmp_path / "live").mkdir()
    worker.start()
    try:
        with running_api(env, tmp_path / "api.log") as base:
            http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert produce_raw(topics, first) == len(first)
            wait_until_caught_up(topics, live, worker)
            assert http.get(f"/v1/profiles/{chosen[0]['customer_id']}").status_code == 200

            # Their events keep coming while the erasures are requested, by every kind of id they have.
            traffic = threading.Thread(target=produce_raw, args=(topics, rest))
            traffic.start()
            receipts = []
            for v, kind in zip(chosen, itertools.cycle(("customer_id", "emails", "anonymous_ids")), strict=False):
                # By an id the live profile has now: an id not linked yet would name nobody (and erase only itself).
                known = http.get(f"/v1/profiles/{v['customer_id']}").json()
                named = known[kind][0] if kind != "customer_id" and known[kind] else v["customer_id"]
                answer = http.delete(f"/v1/profiles/{named}")
                assert answer.status_code == 202, answer.text
                receipts.append(answer.json()["erasure_id"])
            again = http.delete(f"/v1/profiles/{chosen[0]['customer_id']}")
            assert again.json()["erasure_id"] == receipts[0], "erasing twice returns the first receipt"
            traffic.join()
            wait_until_caught_up(topics, live, worker)

            statuses = [http.get(f"/v1/erasures/{r}").json() for r in receipts]
            assert all(s["status"] == "completed" for s in statuses), statuses[:3]
            assert http.get(f"/v1/erasures/er_{'0' * 32}").status_code == 404
            answers = {i: http.get(f"/v1/profiles/{i}").status_code for i in sorted(their_ids)}
            assert {i: s for i, s in answers.items() if s != 404} == {}

            # Subscribers learn it: each segment an erased profile was in ends with its exit, caused by the
            # erasure, with nothing of the profile in it.
            changes = [orjson.loads(r.value) for r in topics.read_to_end(["segments.changes"])]
            last = {(c["customer_id"], c["segment"]): c for c in changes}  # per customer in topic order
            still_in = sorted(k for k, c in last.items() if k[0] in profile_ids and c["change"] == "entered")
            assert still_in == []
            by_erasure = [c for c in changes if "erasure" in c["cause"]]
            assert len(by_erasure) >= ERASED // 2, "most of them were in a segment: the check above can fail"
            assert {c["customer_id"] for c in by_erasure} <= profile_ids
            assert {c["cause"]["erasure"] for c in by_erasure} <= set(receipts)
            assert {(c["change"], orjson.dumps(c["excerpt"])) for c in by_erasure} == {("exited", b"{}")}
    finally:
        worker.stop()

    # The rebuild: the same raw history and erasures (copied: events.resolved is the live worker's own), a
    # fresh namespace, a fresh worker.
    rebuilt = f"rebuilt-{uuid.uuid4().hex[:6]}"
    settings = topics.settings
    kafka = settings.kafka.model_copy(update={"topic_prefix": f"{settings.kafka.topic_prefix}rebuild."})
    with created_topics(settings.model_copy(update={"kafka": kafka})) as history:
        copy_topics(topics, history, [spec.name for spec in (*RAW_EVENT_TOPICS, ERASURES)])
        (tmp_path / "rebuilt").mkdir()
        replay = Worker(history, rebuilt, tmp_path / "rebuilt")
        replay.start()
        try:
            wait_until_caught_up(history, rebuilt, replay)
        finally:
            replay.stop()

    # And `rapport replay` of the original raw topics into another fresh namespace.
    replayed = f"replayed-{uuid.uuid4().hex[:6]}"
    done = rapport("replay", "--into", replayed, "--quiet", env=topics.env)
    assert done.returncode == 0, done.stderr

    for namespace in (live, rebuilt, replayed):
        left = asyncio.run(_traces(topics, namespace, their_ids, profile_ids))
        assert left == [], f"{namespace}: {left[:5]}"
    # The others' are kept: the checks above can fail.
    assert asyncio.run(_model_views(topics, live)) > 50
    assert asyncio.run(_members(topics, live, "visitors")) > 50
    untouched = {pid: view for pid, view in stored_views(topics, live, as_of).items() if not _mentions(view, their_ids)}
    assert len(untouched) > 250
    for namespace in (rebuilt, replayed):
        views = {pid: v for pid, v in stored_views(topics, namespace, as_of).items() if pid in untouched}
        assert diff_profiles(untouched, views) == [], namespace


async def _members(topics: Topics, namespace: str, segment: str) -> int:
    redis = make_redis(topics.settings)
    try:
        return int(await redis.zcard(SegmentStore(redis, namespace).members_key(segment)))
    finally:
        await redis.aclose()


async def _model_views(topics: Topics, namespace: str) -> int:
    redis = make_redis(topics.settings)
    try:
        return len([k async for k in redis.scan_iter(match=PendingStore(redis, namespace).view_key("*"), count=1000)])
    finally:
        await redis.aclose()


def _mentions(view: dict[str, Any], ids: set[str]) -> bool:
    return bool(ids & {str(i) for i in orjson.dumps(view).decode().replace('"', " ").split()})


async def _traces(topics: Topics, namespace: str, ids: set[str], profile_ids: set[str]) -> list[str]:
    """Everything of ``ids`` a namespace still holds: profile keys, the models' snapshots, views and unfolded
    entries (which hold raw events), segment memberships, identity links, RFM members, reads."""
    redis = make_redis(topics.settings)
    try:
        store = ProfileStore(redis, namespace)
        models = PendingStore(redis, namespace)
        segments = SegmentStore(redis, namespace)
        out = []
        for pid in profile_ids:
            if await redis.exists(store.profile_key(pid)):
                out.append(f"profile {pid}")
            model_keys = (models.pending_key(pid), models.view_key(pid), models.entries_key(pid))
            if await redis.exists(*model_keys, models.listed_entries_key(pid)):
                out.append(f"models {pid}")
            if await redis.exists(segments.profile_segments_key(pid)):
                out.append(f"segments of {pid}")
            for segment in SEGMENTS:
                if await redis.zscore(segments.members_key(segment), pid) is not None:
                    out.append(f"member of {segment}: {pid}")
            for dimension in ("r", "f", "m"):
                if await redis.zscore(store.rfm_key(dimension), pid) is not None:
                    out.append(f"rfm {dimension} {pid}")
        for any_id in ids:
            if await redis.exists(store.alias_key(any_id), store.email_key(any_id)):
                out.append(f"link {any_id}")
        reads = await read_profiles(
            store, sorted(ids), topics.settings.profile.fold_config(), as_of_ms=None, now_ms=int(time.time() * 1000)
        )
        out += [f"read {i}" for i, r in reads.items() if r.view is not None]
        async for key in redis.scan_iter(match=store.profile_key("*"), count=1000):
            pid = key.decode().split(":p:{", 1)[1][:-1]
            loaded = (await store.load([pid]))[pid].state
            if loaded is not None and ids & {str(loaded.customer_id), *loaded.anonymous_ids, *loaded.emails}:
                out.append(f"inside {pid}")
        return out
    finally:
        await redis.aclose()
