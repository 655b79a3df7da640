"""Segments in the live worker: memberships in Redis equal the rules evaluated on the independent oracle's
profiles, and segments.changes holds a consistent, duplicate-free history that ends in those memberships."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from profiles.config import HOUR_MS
from profiles.model_store import ModelStore
from profiles.models.specs import CHURN_RISK
from profiles.segment_store import Backfill, SegmentStore
from profiles.segments import compile_rule, evaluate
from profiles.timeutil import bucket_of
from schemas.validation import Rejection, ValidationLimits, validate_event
from services.kafka_clients import make_consumer
from services.redis_client import make_redis
from tests.kafka_support import Topics, produce_raw, rapport
from tests.model_support import publish_churn_model
from tests.oracle import OracleSettings, build_profiles
from tests.worker_support import Worker, define_segments, wait_until_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RULES = {
    "buyers": "transactions.orders >= 1",
    "active_7d": 'windows["7d"].clicks >= 1',
    "recent_buyers": "rfm.recency_days < 10",
    "engaged": 'journey_stage == "consideration" || journey_stage == "decision"',
    "big_month": 'windows["30d"].spend > 100.0',
    # No model has learned in this run: the worker scores with the documented cold-start heuristics.
    "lapsing": "scores.churn_risk > 0.01",  # at most 4 active events in 30 days
    "valuable": "scores.clv_90d > 100.0",
}
PUBLISHED_LATER = {"big_spenders": "transactions.spend > 200.0"}
EVERY_RULE = {**RULES, **PUBLISHED_LATER}


def test_memberships_equal_the_oracle_and_the_change_stream_is_consistent(tmp_path: Path, topics: Topics) -> None:
    start = (datetime.now(UTC) - timedelta(days=31)).replace(microsecond=0)
    events_file = tmp_path / "events.jsonl"
    sim = rapport(
        "simulate", "--customers", "250", "--days", "30", "--seed", "8", "--start", start.isoformat(),
        "--out", str(events_file), env=topics.env,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    lines = [line for line in events_file.read_bytes().splitlines() if line.strip()]
    namespace = f"seg-{uuid.uuid4().hex[:6]}"
    define_segments(topics.settings, namespace, RULES)

    worker = Worker(topics, namespace, tmp_path)
    worker.start()
    try:
        assert produce_raw(topics, lines) == len(lines)
        wait_until_caught_up(topics, namespace, worker)
        # Published once every profile exists: the worker evaluates the existing ones in the background.
        define_segments(topics.settings, namespace, PUBLISHED_LATER)
        _evaluated(topics, namespace, "big_spenders")
        memberships, evaluated_at = _settled(topics, namespace)
    finally:
        worker.stop()

    now = datetime.now(UTC)
    valid = [
        orjson.loads(v)
        for v in lines
        if not isinstance(validate_event(v, now=now, limits=ValidationLimits()), Rejection)
    ]
    oracle = build_profiles(valid, as_of_ms=evaluated_at, settings=OracleSettings())
    rules = {name: compile_rule(rule) for name, rule in EVERY_RULE.items()}
    expected = {
        name: {pid for pid, view in oracle.items() if evaluate(rule, view, _heuristic_scores(view)).member}
        for name, rule in rules.items()
    }
    assert all(expected[n] for n in ("lapsing", "valuable", "active_7d")), str({n: len(m) for n, m in expected.items()})
    for name in EVERY_RULE:
        assert memberships[name] == expected[name], (name, sorted(memberships[name] ^ expected[name])[:5])

    changes = [orjson.loads(r.value) for r in topics.read(["segments.changes"], expected=1)]
    assert len({c["change_id"] for c in changes}) == len(changes), "no change is sent twice"
    state: dict[tuple[str, str], str] = defaultdict(lambda: "exited")
    for change in changes:  # the topic is ordered per profile; read() keeps each partition's order
        key = (change["customer_id"], change["segment"])
        assert change["change"] != state[key], f"{key} {change['change']} twice in a row"
        state[key] = change["change"]
    from_stream = {
        name: {pid for (pid, seg), s in state.items() if seg == name and s == "entered"} for name in EVERY_RULE
    }
    assert from_stream == memberships
    assert any(c["cause"].get("timer") for c in changes), "time passing must have changed some memberships"
    assert any(c["cause"].get("event_id") for c in changes)
    published = [c for c in changes if c["segment"] == "big_spenders"]
    assert published, "publishing a segment must enter the existing profiles it selects"
    assert {str(c["cause"]) for c in published} == {"{'definition': 1}"}


def _heuristic_scores(view: dict[str, Any]) -> dict[str, float]:
    """The cold-start scores from the oracle's view, by docs/models.md's formulas (default horizons)."""
    last_30d = view["windows"]["30d"]
    active = sum(last_30d[m] for m in ("clicks", "email_opens", "email_clicks", "orders", "mentions"))
    return {"churn_risk": math.exp(-active), "clv_90d": max(0.0, view["windows"]["90d"]["spend"])}


def _evaluated(topics: Topics, namespace: str, segment: str, timeout_s: float = 120) -> None:
    async def done() -> bool:
        redis = make_redis(topics.settings)
        try:
            job = await SegmentStore(redis, namespace).backfill(segment)
            return job is not None and job.done(topics.settings.kafka.event_partitions)
        finally:
            await redis.aclose()

    deadline = time.monotonic() + timeout_s
    while not asyncio.run(done()):
        assert time.monotonic() < deadline, f"{segment}: existing profiles not evaluated in {timeout_s} s"
        time.sleep(1)


def _settled(topics: Topics, namespace: str, timeout_s: float = 120) -> tuple[dict[str, set[str]], int]:
    """Memberships once no timer is overdue, and the instant they hold for (retried across an hour tick)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = int(time.time() * 1000)
        memberships, overdue = asyncio.run(_read(topics, namespace, before))
        after = int(time.time() * 1000)
        if not overdue and bucket_of(before) == bucket_of(after) and after % HOUR_MS > 5_000:
            return memberships, after
        time.sleep(1)
    raise TimeoutError("timers did not settle")


async def _read(topics: Topics, namespace: str, now_ms: int) -> tuple[dict[str, set[str]], int]:
    redis = make_redis(topics.settings)
    try:
        store = SegmentStore(redis, namespace)
        overdue = len(await store.due(range(topics.settings.kafka.event_partitions), now_ms - 2_000, 10))
        out: dict[str, Any] = {}
        for name in EVERY_RULE:
            members: list[str] = []
            while batch := await store.members(name, members[-1] if members else None, 1000):
                members += batch
            out[name] = set(members)
        return out, overdue
    finally:
        await redis.aclose()


def test_a_customer_who_goes_quiet_leaves_active_7d_within_2_s_with_no_new_event(
    tmp_path: Path, topics: Topics
) -> None:
    namespace = f"seg-{uuid.uuid4().hex[:6]}"
    define_segments(topics.settings, namespace, {"active_7d": 'windows["7d"].clicks >= 1'})
    # One click; the 7-day window drops its hourly bucket at exit_ms. The worker's clock is moved so that
    # this happens 10 s after it starts: then nothing but time passes.
    click_ms = (int(time.time() * 1000) // HOUR_MS - 300) * HOUR_MS + 1_800_000
    exit_ms = (bucket_of(click_ms) + 7 * 24 - 1) * HOUR_MS + 1
    offset_s = (exit_ms - 10_000 - int(time.time() * 1000)) / 1000
    click = {
        "event_id": "e-quiet", "type": "click", "customer_id": "c-quiet", "source": "web",
        "timestamp": datetime.fromtimestamp(click_ms / 1000, UTC).isoformat(), "session_id": "s-1",
        "action": "page_view", "url": "https://shop.example/",
    }  # fmt: skip
    worker = Worker(topics, namespace, tmp_path, {"RAPPORT_STREAM__CLOCK_OFFSET_S": str(offset_s)})
    worker.start()
    try:
        produce_raw(topics, [orjson.dumps(click)])
        changes: list[tuple[dict[str, Any], float]] = []  # (change, worker-clock ms when it was read)
        consumer = make_consumer(topics.settings, "test-changes", auto_offset_reset="earliest")
        consumer.subscribe([topics.names["segments.changes"]])
        deadline = time.monotonic() + 60
        while len(changes) < 2 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                seen_ms = time.time() * 1000 + offset_s * 1000
                changes += [(orjson.loads(r.value), seen_ms) for r in records]
        consumer.close()
    finally:
        worker.stop()
    assert [(c["change"], list(c["cause"])) for c, _ in changes] == [("entered", ["event_id"]), ("exited", ["timer"])]
    exited, seen_ms = changes[1]
    at_ms = datetime.fromisoformat(exited["at"]).timestamp() * 1000
    assert exit_ms <= at_ms <= exit_ms + 2_000, "evaluated at the boundary, on the worker's clock"
    assert seen_ms - exit_ms <= 2_000, f"the exit reached Kafka {seen_ms - exit_ms:.0f} ms after the boundary"


MODEL_SECRET = "segment-sweep-secret-0123"


def test_a_new_model_version_re_evaluates_score_segments_with_no_new_event(tmp_path: Path, topics: Topics) -> None:
    """Quiet customers enter and leave a score segment because the served model changed (published, then
    a rollback to the first version): each sweep is caused by the models, with ids no other sweep repeats."""
    namespace = f"seg-{uuid.uuid4().hex[:6]}"
    define_segments(topics.settings, namespace, {"at_risk": "scores.churn_risk > 0.5"})
    customers = [f"c-{n}" for n in range(3)]
    clicks = [_click(pid, f"e-{pid}", int(time.time() * 1000) - HOUR_MS) for pid in customers]
    env = {
        "RAPPORT_MODELS__SECRET": MODEL_SECRET,
        "RAPPORT_MODELS__RELOAD_S": "0.5",
        "RAPPORT_MODELS__MIN_EXAMPLES": "50",
        "RAPPORT_MODELS__SEGMENT_SWEEP_S": "0",
    }
    worker = Worker(topics, namespace, tmp_path, env)
    worker.start()
    try:
        produce_raw(topics, [orjson.dumps(c) for c in clicks])
        wait_until_caught_up(topics, namespace, worker)
        # One click in 30 days: the cold-start heuristic says exp(-1) ≈ 0.37, nobody is at risk.
        assert asyncio.run(_members(topics, namespace, "at_risk")) == set()
        # Predicts ≈ 0.69 for everyone.
        first = asyncio.run(publish_churn_model(topics.settings, namespace, 1.0, MODEL_SECRET))
        entered = _changes(topics, 3)
        asyncio.run(publish_churn_model(topics.settings, namespace, 0.0, MODEL_SECRET))  # ≈ 0.31
        exited = _changes(topics, 6)[3:]
        asyncio.run(_rollback(topics, namespace, first))
        again = _changes(topics, 9)[6:]
        members = asyncio.run(_members(topics, namespace, "at_risk"))
        job = asyncio.run(_job(topics, namespace, "at_risk"))
    finally:
        worker.stop()

    expected = [(1, entered, "entered", 0.69), (2, exited, "exited", 0.31), (3, again, "entered", 0.69)]
    for sweep, batch, kind, score in expected:
        assert {c["customer_id"] for c in batch} == set(customers)
        assert {c["change"] for c in batch} == {kind}
        assert all(c["cause"] == {"models": {"churn_risk": first + (sweep == 2)}, "sweep": sweep} for c in batch)
        assert all(c["excerpt"]["scores"]["churn_risk"] == pytest.approx(score, abs=0.02) for c in batch)
    assert len({c["change_id"] for c in entered + exited + again}) == 9, "a rollback repeats no change id"
    assert members == set(customers)
    assert job is not None
    assert (job.version, job.sweep, job.models) == (1, 3, {"churn_risk": first})
    assert job.done(topics.settings.kafka.event_partitions)


def _click(customer_id: str, event_id: str, at_ms: int) -> dict[str, str]:
    at = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat()
    return {
        "event_id": event_id, "type": "click", "customer_id": customer_id, "source": "web", "timestamp": at,
        "session_id": "s-1", "action": "page_view", "url": "https://shop.example/",
    }  # fmt: skip


async def _rollback(topics: Topics, namespace: str, version: int) -> None:
    redis = make_redis(topics.settings)
    try:
        assert await ModelStore(redis, namespace).rollback(CHURN_RISK, version)
    finally:
        await redis.aclose()


async def _members(topics: Topics, namespace: str, segment: str) -> set[str]:
    redis = make_redis(topics.settings)
    try:
        return set(await SegmentStore(redis, namespace).members(segment, None, 1000))
    finally:
        await redis.aclose()


async def _job(topics: Topics, namespace: str, segment: str) -> Backfill | None:
    redis = make_redis(topics.settings)
    try:
        return await SegmentStore(redis, namespace).backfill(segment)
    finally:
        await redis.aclose()


def _changes(topics: Topics, expected: int) -> list[dict[str, Any]]:
    """The first ``expected`` changes (no more), sweep by sweep."""
    records = topics.read(["segments.changes"], expected=expected, timeout_s=60)
    assert len(records) == expected, [orjson.loads(r.value) for r in records]
    return sorted((orjson.loads(r.value) for r in records), key=lambda c: (c["cause"]["sweep"], c["customer_id"]))
