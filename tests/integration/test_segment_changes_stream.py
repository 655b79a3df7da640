"""``GET /v1/segment-changes`` (SSE) against the real broker: the keep-alive of a stream whose filter lets
little through, and a ``Last-Event-ID`` the topic's retention has passed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import time
import uuid
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka import TopicPartition as SyncTopicPartition

from schemas.topics import SEGMENT_CHANGES
from services.api.app import create_app
from services.api.draining import Draining
from services.api.routes import segment_changes
from services.api.stream_slots import StreamSlots
from services.topics_admin import admin_client
from tests.api_support import create_key, running_api
from tests.kafka_support import Topics, send_changes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_a_stream_whose_segments_are_rare_sends_keepalives_while_other_changes_flow(
    topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes of another segment every 100 ms for 6 s, one of the wanted segment in the middle: the stream
    is never silent much longer than the keep-alive interval. Until 2026-12-06 the keep-alive went out only
    after a fetch that returned nothing, so such a stream said nothing at all between wanted changes."""
    keepalive_s = 0.5
    monkeypatch.setattr(segment_changes, "_KEEPALIVE_S", keepalive_s)
    settings = topics.settings
    topic = topics.names["segments.changes"]
    count = SEGMENT_CHANGES.partition_count(settings.kafka.event_partitions)

    async def run() -> tuple[list[tuple[float, bytes]], float]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
        await consumer.start()
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        positions = await segment_changes._start(consumer, partitions, None, "latest")
        draining = Draining()
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await producer.start()

        async def produce() -> float:
            try:
                for i in range(60):
                    segment = "rare" if i == 30 else "busy"
                    change = {"change_id": f"ch-{i}", "customer_id": f"c-{i % 5}", "segment": segment}
                    await producer.send_and_wait(topic, orjson.dumps(change), key=change["customer_id"].encode())
                    await asyncio.sleep(0.1)
                return time.monotonic()
            finally:
                await producer.stop()
                draining.request()  # ends the stream within a poll

        sent: list[tuple[float, bytes]] = []
        producing = asyncio.create_task(produce())
        slot = StreamSlots(1).take()
        assert slot is not None
        stream = segment_changes._Stream(consumer, slot)
        async for chunk in segment_changes._events(stream, positions, {"rare"}, draining):  # stops the consumer
            sent.append((time.monotonic(), chunk))
        return sent, await producing

    sent, flowed_until = asyncio.run(asyncio.wait_for(run(), 60))
    events = [orjson.loads(c.split(b"data: ", 1)[1]) for _, c in sent if c.startswith(b"id: ")]
    assert [e["change_id"] for e in events] == ["ch-30"]
    assert sum(c == b": keepalive\n\n" for _, c in sent) >= 4, sent
    # While changes flow, a fetch returns every 100 ms or so: the keep-alive goes out soon after it is due.
    # (Once they stop, a fetch waits up to its poll of a second, as on an idle topic.) A second of slack for a
    # loaded machine; without the keep-alive the stream is silent for 3 s either side of ch-30.
    times = [t for t, _ in sent if t <= flowed_until] + [flowed_until]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) < keepalive_s + 1.0, gaps


def _change_ids(base: str, token: str, last_event_id: str, count: int) -> list[str]:
    """The change ids a stream resumed at ``last_event_id`` sends, up to ``count``, or those sent before it
    went silent for 10 s (shorter than a keep-alive)."""
    headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": last_event_id}
    got: list[str] = []
    timeout = httpx.Timeout(30, read=10)
    try:
        with httpx.stream("GET", f"{base}/v1/segment-changes", headers=headers, timeout=timeout) as stream:
            assert stream.status_code == 200, stream.read()
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    got.append(orjson.loads(line[6:])["change_id"])
                    if len(got) == count:
                        break
    except httpx.ReadTimeout:
        pass
    return got


def test_a_last_event_id_older_than_retention_resumes_at_the_oldest_retained_change(
    tmp_path: Path, topics: Topics
) -> None:
    """Ten changes of one customer (one partition), the first five deleted as retention deletes them: a client
    whose Last-Event-ID is before them gets the five left, not nothing. Until 2026-12-06 the stream's consumer
    reset an out-of-range position to the end (aiokafka's default), skipping every retained change. A
    position past the end (the topic recreated since) resumes at the oldest retained change too."""
    env = {**topics.env, "RAPPORT_PROFILE__NAMESPACE": f"sse-{uuid.uuid4().hex[:6]}", "RAPPORT_API__KEY_CACHE_S": "0"}
    token = create_key(env, "--name", "sse", "--scopes", "segments:admin")
    changes = [{"change_id": f"ch-{i}", "customer_id": "c-1", "segment": "vip"} for i in range(10)]
    send_changes(topics, changes)
    (partition,) = {r.partition for r in topics.read_to_end(["segments.changes"])}
    topic = topics.names["segments.changes"]
    with admin_client(topics.settings) as admin:
        admin.delete_records({SyncTopicPartition(topic, partition): 5})
    count = SEGMENT_CHANGES.partition_count(topics.settings.kafka.event_partitions)
    expired = segment_changes._encode_position(dict.fromkeys(range(count), 0)).decode()
    ahead = segment_changes._encode_position({**dict.fromkeys(range(count), 0), partition: 1000}).decode()
    retained = [c["change_id"] for c in changes[5:]]
    with running_api(env, tmp_path / "api.log") as base:
        assert _change_ids(base, token, expired, len(retained)) == retained
        assert _change_ids(base, token, ahead, len(retained)) == retained


def test_an_api_process_holds_at_most_its_limit_of_streams_open(tmp_path: Path, topics: Topics) -> None:
    """Each stream holds a Kafka consumer. With ``api.max_change_streams=2`` and two streams open, a third is
    answered 503 ``too_many_streams`` with ``Retry-After``; once a client goes away, its slot is given back
    and a new stream is accepted. Until 2026-12-07 there was no limit."""
    env = {
        **topics.env,
        "RAPPORT_PROFILE__NAMESPACE": f"sse-{uuid.uuid4().hex[:6]}",
        "RAPPORT_API__KEY_CACHE_S": "0",
        "RAPPORT_API__MAX_CHANGE_STREAMS": "2",
    }
    token = create_key(env, "--name", "sse", "--scopes", "segments:admin")
    headers = {"Authorization": f"Bearer {token}"}
    with (
        running_api(env, tmp_path / "api.log") as base,
        httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(30, read=10)) as http,
        contextlib.ExitStack() as open_streams,
    ):
        streams = [open_streams.enter_context(http.stream("GET", "/v1/segment-changes")) for _ in range(2)]
        # Kept: an iterator collected closes its response.
        lines = [stream.iter_lines() for stream in streams]
        for stream, read in zip(streams, lines, strict=True):
            assert stream.status_code == 200
            assert next(read) == "retry: 1000"  # its body has started
        with http.stream("GET", "/v1/segment-changes") as refused:
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "5"
            error = orjson.loads(refused.read())["error"]
        assert error["code"] == "too_many_streams"
        assert error["details"] == {"max_change_streams": 2}

        streams[0].close()
        # The server learns that the client went away when it next writes to it: a change to send.
        deadline = time.monotonic() + 60
        while True:
            send_changes(topics, [{"change_id": f"ch-{uuid.uuid4().hex[:6]}", "customer_id": "c", "segment": "s"}])
            with http.stream("GET", "/v1/segment-changes") as again:
                if again.status_code == 200:
                    break
                assert again.status_code == 503
            assert time.monotonic() < deadline, "the closed stream's slot was never given back"
            time.sleep(0.5)


def test_a_stream_whose_client_went_away_before_its_body_started_gives_its_slot_back(topics: Topics) -> None:
    """The application called in this process as uvicorn calls it (ASGI 2.3), with a client that is gone by the
        time the response starts and a ``send`` that waits: Starlette then cancels the response before it asks the
        body for its first chunk, so the stream's generator never runs and its ``finally`` never gives the slot
        back. ``_Stream.abandon`` does, once the generator is collected (checked here with it disabled: the three
    slots stay held), and stops the stream's consumer (not checked). (With
        uvicorn's ``send``, which does not wait, the body starts and its ``finally`` runs: a real client that goes
        away at once does not reach this path.)"""
    env = {**topics.env, "RAPPORT_PROFILE__NAMESPACE": f"sse-{uuid.uuid4().hex[:6]}", "RAPPORT_API__KEY_CACHE_S": "0"}
    token = create_key(env, "--name", "sse", "--scopes", "segments:admin")
    settings = topics.settings.model_copy(
        update={"profile": topics.settings.profile.model_copy(update={"namespace": env["RAPPORT_PROFILE__NAMESPACE"]})}
    )

    async def run() -> tuple[list[int], int]:
        app = create_app(settings)
        statuses: list[int] = []
        async with app.router.lifespan_context(app):
            slots: StreamSlots = app.state.ctx.streams
            for _ in range(3):
                asked = False

                async def receive() -> dict[str, object]:
                    nonlocal asked
                    if not asked:
                        asked = True
                        return {"type": "http.request", "body": b"", "more_body": False}
                    return {"type": "http.disconnect"}

                async def send(message: MutableMapping[str, Any]) -> None:
                    if message["type"] == "http.response.start":
                        statuses.append(message["status"])
                    # A server's send may wait (its write buffer is full): Starlette's cancellation lands here,
                    # before the body's first chunk is asked for.
                    await asyncio.sleep(0)

                scope = {
                    "type": "http",
                    "asgi": {"version": "3.0", "spec_version": "2.3"},
                    "http_version": "1.1",
                    "method": "GET",
                    "scheme": "http",
                    "path": "/v1/segment-changes",
                    "raw_path": b"/v1/segment-changes",
                    "query_string": b"",
                    "root_path": "",
                    "headers": [(b"host", b"api"), (b"authorization", f"Bearer {token}".encode())],
                    "client": ("127.0.0.1", 1),
                    "server": ("127.0.0.1", 80),
                }
                await app(scope, receive, send)
                gc.collect()
                await asyncio.sleep(0.1)  # the consumer's stop, scheduled by abandon
            return statuses, slots.open

    statuses, still_open = asyncio.run(asyncio.wait_for(run(), 60))
    assert statuses == [200, 200, 200], "refused before the stream was set up"
    assert still_open == 0
