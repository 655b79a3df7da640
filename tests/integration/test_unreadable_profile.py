"""A stored profile this version cannot decode (damaged by hand or by a restore, or written by an
incompatible release) must not stall the worker: its records are dead-lettered as ``unreadable_profile``,
everyone else's are applied, and the bytes are left for an operator. Repaired (here: deleted), ``rapport dlq
redrive unreadable_profile`` sends the waiting events back. Before 2026-12-06 the decoding error failed every
batch that loaded the profile and the worker retried it for ever: no customer of its partitions moved."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from profiles.store import ProfileStore
from services.redis_client import make_redis
from services.settings import Settings
from tests.integration.test_corrupt_resolved import click
from tests.kafka_support import Topics, produce_raw, rapport
from tests.worker_support import Worker, run_worker_through, wait_until_caught_up

pytestmark = pytest.mark.integration


def test_an_unreadable_profile_holds_no_one_back_and_its_events_wait_in_the_dead_letters(
    topics: Topics, tmp_path: Path
) -> None:
    namespace = f"t{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

    def clicks(customer: str, minutes: range) -> list[bytes]:
        return [click(f"ev-{customer}-{m}", start + timedelta(minutes=m), customer, f"a-{customer}") for m in minutes]

    run_worker_through(topics, namespace, tmp_path, clicks("c-bad", range(2)) + clicks("c-ok", range(1)))
    # Damaged while no worker runs (a worker that wrote the profile keeps it decoded, and would write it again
    # over the damage: its watermark is intact).
    damaged = _raw(topics.settings, namespace, "c-bad")[:8] + b"\xc1 damaged"
    _put(topics.settings, namespace, "c-bad", damaged)
    worker = Worker(topics, namespace, tmp_path)
    worker.start()
    try:
        produce_raw(topics, clicks("c-bad", range(2, 4)) + clicks("c-ok", range(1, 3)))
        wait_until_caught_up(topics, namespace, worker, timeout_s=120)
        assert worker.alive()
    finally:
        worker.stop()

    assert _raw(topics.settings, namespace, "c-bad") == damaged  # left for the operator
    assert _events_applied(topics.settings, namespace, "c-ok") == 3
    resolved = topics.names["events.resolved"]
    dead = [
        headers
        for record in topics.read(["events.dlq"], expected=2)
        if (headers := {k: v.decode() for k, v in record.headers})["rapport.source.topic"] == resolved
    ]
    assert [h["rapport.reason"] for h in dead] == ["unreadable_profile"] * 2, dead
    assert all("the stored profile 'c-bad' cannot be read" in h["rapport.message"] for h in dead), dead
    reported = [line for line in worker.log_lines() if "'c-bad' cannot be read" in line]
    assert len(reported) == 1, worker.troubles()

    hashed = rapport("namespace", "hash", namespace, env=topics.env)
    assert hashed.returncode == 1
    assert "rapport: the stored profile 'c-bad' cannot be read" in hashed.stderr, hashed.stderr

    # A replay into the namespace sets the profile's records aside too, and leaves its bytes alone.
    replayed = rapport("replay", "--into", namespace, "--quiet", env=topics.env)
    assert replayed.returncode == 0, replayed.stderr
    assert "4 records set aside" in replayed.stdout, replayed.stdout
    assert "the stored profile 'c-bad' cannot be read" in replayed.stderr, replayed.stderr
    assert _raw(topics.settings, namespace, "c-bad") == damaged

    _put(topics.settings, namespace, "c-bad", None)  # the repair: a profile a replay rebuilds, or none
    sent = rapport("dlq", "redrive", "unreadable_profile", "--json", env=topics.env)
    assert sent.returncode == 0, sent.stderr
    assert orjson.loads(sent.stdout)["sent_by_topic"] == {topics.names["events.clicks"]: 2}
    run_worker_through(topics, namespace, tmp_path)
    assert _events_applied(topics.settings, namespace, "c-bad") == 2
    assert _events_applied(topics.settings, namespace, "c-ok") == 3


def _raw(settings: Settings, namespace: str, profile_id: str) -> bytes:
    """The bytes of the profile's key."""

    async def run() -> bytes:
        redis = make_redis(settings)
        try:
            value = await redis.get(ProfileStore(redis, namespace).profile_key(profile_id))
        finally:
            await redis.aclose()
        assert isinstance(value, bytes)
        return value

    return asyncio.run(run())


def _put(settings: Settings, namespace: str, profile_id: str, value: bytes | None) -> None:
    """Set the profile's key to ``value`` (None: delete it), as an operator's tool would."""

    async def run() -> None:
        redis = make_redis(settings)
        key = ProfileStore(redis, namespace).profile_key(profile_id)
        try:
            await (redis.delete(key) if value is None else redis.set(key, value))
        finally:
            await redis.aclose()

    asyncio.run(run())


def _events_applied(settings: Settings, namespace: str, profile_id: str) -> int:
    async def run() -> int:
        redis = make_redis(settings)
        try:
            state = (await ProfileStore(redis, namespace).load([profile_id]))[profile_id].state
        finally:
            await redis.aclose()
        assert state is not None
        return state.events_applied

    return asyncio.run(run())
