"""Damaged keys in Redis (edited by hand, a bad restore).

A stored profile this version cannot decode must not stall the worker: its records are dead-lettered as
``unreadable_profile``, everyone else's are applied, and the bytes are left for an operator. Repaired (here:
deleted), ``rapport dlq redrive unreadable_profile`` sends the waiting events back. Before 2026-12-06 the
decoding error failed every batch that loaded the profile and the worker retried it for ever: no customer of
its partitions moved.

A damaged segment definition does pause the worker, on purpose (memberships evaluated without it would
publish changes that are not true), with an error that names it and says how to repair it; saving it again
resumes the worker. Before 2026-12-06 the error was msgspec's alone, and saving the segment again failed on
the same decoding error."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from profiles.segment_store import SegmentStore
from profiles.state import ProfileState
from profiles.store import ProfileStore
from services.redis_client import make_redis
from services.settings import Settings
from tests.integration.test_corrupt_resolved import click
from tests.kafka_support import Topics, produce_raw, rapport
from tests.worker_support import Worker, define_segments, run_worker_through, wait_until_caught_up

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
    checked = rapport("namespace", "check", namespace, env=topics.env)
    assert checked.returncode == 1
    assert checked.stdout.startswith("profile c-bad: MessagePack data is malformed"), checked.stdout
    assert ", 1 unreadable; 0 unreadable segment definitions" in checked.stdout, checked.stdout

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
    assert rapport("namespace", "check", namespace, env=topics.env).returncode == 0
    assert _events_applied(topics.settings, namespace, "c-ok") == 3


def test_a_damaged_segment_definition_pauses_the_worker_until_it_is_saved_again(topics: Topics, tmp_path: Path) -> None:
    namespace = f"t{uuid.uuid4().hex[:8]}"
    env = {**topics.env, "RAPPORT_PROFILE__NAMESPACE": namespace}
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    rule = 'windows["7d"].clicks >= 1'
    define_segments(topics.settings, namespace, {"clickers": rule})
    run_worker_through(topics, namespace, tmp_path, [click("ev-1", start, "c-1", "a-1")])
    _damage_definition(topics.settings, namespace, "clickers")

    worker = Worker(topics, namespace, tmp_path)
    worker.start()
    try:
        produce_raw(topics, [click("ev-2", start, "c-2", "a-2")])
        deadline = time.monotonic() + 60
        while not any("the definition of segment 'clickers' cannot be read" in line for line in worker.log_lines()):
            assert time.monotonic() < deadline, worker.troubles()
            time.sleep(0.5)
        assert worker.alive()
        assert _state(topics.settings, namespace, "c-2") is None  # waiting: not applied

        listed = rapport("segments", "list", env=env)
        assert listed.returncode == 1
        assert "rapport: the definition of segment 'clickers' cannot be read" in listed.stderr, listed.stderr
        assert "save it again, or delete it (`rapport segments delete clickers`)" in listed.stderr
        checked = rapport("namespace", "check", namespace, env=env)
        assert checked.returncode == 1
        assert checked.stdout.startswith("segment clickers: the definition of segment 'clickers' cannot be read")

        saved = rapport("segments", "put", "clickers", "--rule", rule, env=env)
        assert saved.returncode == 0, saved.stderr
        assert saved.stdout.strip() == "clickers version 2"
        wait_until_caught_up(topics, namespace, worker, timeout_s=120)
    finally:
        worker.stop()
    assert _events_applied(topics.settings, namespace, "c-2") == 1
    members = rapport("segments", "members", "clickers", env=env)
    assert members.stdout.split() == ["c-1", "c-2"], members
    assert rapport("namespace", "check", namespace, env=env).returncode == 0


def _damage_definition(settings: Settings, namespace: str, name: str) -> None:
    async def run() -> None:
        redis = make_redis(settings)
        try:
            await redis.hset(SegmentStore(redis, namespace).definitions_key, name, b'{"name": "damag')
        finally:
            await redis.aclose()

    asyncio.run(run())


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
    state = _state(settings, namespace, profile_id)
    assert state is not None
    return state.events_applied


def _state(settings: Settings, namespace: str, profile_id: str) -> ProfileState | None:
    async def run() -> ProfileState | None:
        redis = make_redis(settings)
        try:
            return (await ProfileStore(redis, namespace).load([profile_id]))[profile_id].state
        finally:
            await redis.aclose()

    return asyncio.run(run())
