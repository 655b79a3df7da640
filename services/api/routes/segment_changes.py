"""``GET /v1/segment-changes``: segment transitions as Server-Sent Events, resumable with ``Last-Event-ID``.

Each connection reads ``segments.changes`` with its own group-less consumer (nothing is committed: the
client's ``Last-Event-ID`` is its position). An event's id is the position *after* it — the next offset
of every partition — so a client that reconnects with the last id it saw continues exactly after it, in
the per-customer order of the topic. Without an id the stream starts at the end (new changes only), or at
the beginning with ``from=earliest``. An id older than the topic's retention (or past its end: the topic
was recreated) resumes at the oldest change the topic still holds.

A stream ends when the API process is asked to stop (``services.api.draining``): uvicorn waits for open
connections before it exits, and its client reconnects with the last id it saw. While Kafka is down, an open
stream keeps sending keep-alives and goes on where it was once the broker is back; a new one is refused
with 503 ``kafka_unavailable``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from schemas.topics import SEGMENT_CHANGES, full_name
from services.api.auth import require
from services.api.context import ApiContext
from services.api.draining import Draining
from services.api.errors import ApiError, responses
from services.api.keys import ApiKey
from services.api.stream_slots import Slot
from services.kafka_clients import stop_consumer

log = logging.getLogger(__name__)
router = APIRouter(tags=["segments"])
Admin = Annotated[ApiKey, Depends(require("segments:admin"))]
_POSITION = msgspec.json.Decoder(dict[int, int])
_KEEPALIVE_S = 15.0
#: The longest a stream waits for records before it looks again whether the process is stopping.
_POLL_S = 1.0
_STOPPING: set[asyncio.Task[None]] = set()  # consumers of abandoned streams being stopped


@router.get(
    "/v1/segment-changes",
    summary="Segment entered/exited events as Server-Sent Events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "`event: segment-change` with the change as `data`; `id` resumes after it.",
        },
        **responses(401, 403, 422, 429, 503),
    },
)
async def segment_changes(
    request: Request,
    _: Admin,
    segments: Annotated[
        str | None, Query(max_length=2000, description="Comma-separated segment names; default: all.")
    ] = None,
    start: Annotated[Literal["latest", "earliest"], Query(alias="from")] = "latest",
    last_event_id: Annotated[str | None, Header(max_length=4096)] = None,
) -> StreamingResponse:
    ctx: ApiContext = request.app.state.ctx
    wanted = {s.strip() for s in segments.split(",") if s.strip()} if segments else None
    resume = _decode_position(last_event_id) if last_event_id else None
    topic = full_name(SEGMENT_CHANGES, ctx.settings.kafka.topic_prefix)
    retry = str(ctx.settings.api.retry_after_s)
    slot = ctx.streams.take()
    if slot is None:
        raise ApiError(
            503,
            "too_many_streams",
            f"this API process has {ctx.streams.limit} segment-change streams open, its most",
            details={"max_change_streams": ctx.streams.limit},
            headers={"Retry-After": retry},
        )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=ctx.settings.kafka.bootstrap_servers,
        client_id=f"{ctx.settings.kafka.client_id}-sse",
        enable_auto_commit=False,
        # A Last-Event-ID older than the topic's retention: from the oldest change still held, not from the
        # end, which would skip every retained change silently.
        auto_offset_reset="earliest",
    )
    try:
        await asyncio.wait_for(consumer.start(), ctx.settings.api.produce_timeout_s)
        # The catalogue fixes the partition count (`rapport topics create` reports any drift).
        count = SEGMENT_CHANGES.partition_count(ctx.settings.kafka.event_partitions)
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        positions = await _start(consumer, partitions, resume, start)
    except BaseException as exc:
        slot.release()
        await stop_consumer(consumer)
        if not isinstance(exc, KafkaError | OSError | TimeoutError):
            raise
        log.warning("segment changes unavailable: %r", exc)
        raise ApiError(
            503, "kafka_unavailable", "segment changes cannot be read now", headers={"Retry-After": retry}
        ) from exc
    stream = _Stream(consumer, slot)
    events = _events(stream, positions, wanted, ctx.draining)
    # A body that never starts (the client went away first) never runs the generator's finally.
    weakref.finalize(events, stream.abandon)
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


class _Stream:
    """A stream's consumer and slot, each given back once: by the stream's end, or, for a stream whose body
    never started, when its generator is collected."""

    def __init__(self, consumer: AIOKafkaConsumer, slot: Slot) -> None:
        self.consumer = consumer
        self.slot = slot
        self.started = False

    async def close(self) -> None:
        self.slot.release()
        await stop_consumer(self.consumer)

    def abandon(self) -> None:
        if self.started or not self.slot.held:
            return
        self.slot.release()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the process is ending: its consumers go with it
            return
        task = loop.create_task(stop_consumer(self.consumer))
        _STOPPING.add(task)
        task.add_done_callback(_STOPPING.discard)


async def _start(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], resume: dict[int, int] | None, start: str
) -> dict[int, int]:
    if resume is None:
        if start == "earliest":
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        return {tp.partition: await consumer.position(tp) for tp in partitions}
    for tp in partitions:
        consumer.seek(tp, resume.get(tp.partition, 0))
    return {tp.partition: resume.get(tp.partition, 0) for tp in partitions}


async def _events(
    stream: _Stream, positions: dict[int, int], wanted: set[str] | None, draining: Draining
) -> AsyncIterator[bytes]:
    stream.started = True
    consumer = stream.consumer
    try:
        yield b"retry: 1000\n\n"
        sent_at = time.monotonic()
        while not draining.requested:
            batches = await consumer.getmany(timeout_ms=int(_POLL_S * 1000))
            for tp, records in sorted(batches.items(), key=lambda item: item[0].partition):
                for record in records:
                    positions[tp.partition] = record.offset + 1
                    if wanted is not None and not _in(record.value, wanted):
                        continue
                    yield (
                        b"id: "
                        + _encode_position(positions)
                        + b"\nevent: segment-change\ndata: "
                        + (record.value or b"{}")
                        + b"\n\n"
                    )
                    sent_at = time.monotonic()
            # Whatever the fetch returned: on a busy topic, the changes of segments this client did not ask
            # for keep coming and send it nothing, and a proxy closes a stream that stays silent.
            if time.monotonic() - sent_at >= _KEEPALIVE_S:
                yield b": keepalive\n\n"
                sent_at = time.monotonic()
    finally:
        await stream.close()


def _in(value: bytes | None, wanted: set[str]) -> bool:
    """Whether a ``segments.changes`` record is a change of a ``wanted`` segment; a record of another writer
    that is not one (any JSON, or none) is not, rather than ending the stream.

    >>> [_in(v, {"vip"}) for v in (b'{"segment": "vip"}', b'{"segment": ["vip"]}', b"[1]", b"{", None)]
    [True, False, False, False, False]
    """
    try:
        change = orjson.loads(value or b"{}")
    except orjson.JSONDecodeError:
        return False
    segment = change.get("segment") if isinstance(change, dict) else None
    return isinstance(segment, str) and segment in wanted


def _encode_position(positions: dict[int, int]) -> bytes:
    return base64.urlsafe_b64encode(orjson.dumps({str(p): o for p, o in sorted(positions.items())})).rstrip(b"=")


def _decode_position(text: str) -> dict[int, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        position = _POSITION.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise ApiError(422, "invalid_last_event_id", "Last-Event-ID is not an id this stream sent") from exc
    if any(p < 0 or o < 0 for p, o in position.items()):
        raise ApiError(422, "invalid_last_event_id", "Last-Event-ID is not an id this stream sent")
    return position
