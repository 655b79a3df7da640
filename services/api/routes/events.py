"""``/v1/events``: the HTTP collector. The same contract as the stream; 202 only once Kafka has the events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from schemas.topics import TOPIC_BY_EVENT_TYPE, full_name
from schemas.validation import Rejection, validate_event
from services.api.auth import require
from services.api.collector import KafkaUnavailableError, Record
from services.api.context import ApiContext
from services.api.errors import ApiError, responses
from services.api.keys import ApiKey

router = APIRouter(prefix="/v1/events", tags=["events"])
Caller = Annotated[ApiKey, Depends(require("events:write"))]
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


class EventResult(BaseModel):
    index: int = Field(description="Position of the event in the request (0 for a single event).")
    event_id: str | None = Field(description="The event's id, when it could be read.")
    status: Literal["accepted", "rejected"]
    reason: str | None = Field(None, description="Rejection reason code (docs/events.md), e.g. `missing_field`.")
    path: str | None = Field(None, description="Where the problem is, e.g. `items[0].quantity`.")
    message: str | None = None


class EventsAccepted(BaseModel):
    accepted: int
    rejected: int
    results: list[EventResult]


def _event_body(many: bool) -> dict[str, Any]:
    event = {"$ref": "#/components/schemas/Event"}
    schema = {"type": "array", "items": event, "maxItems": 500} if many else event
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post(
    "",
    summary="Send one event",
    status_code=202,
    response_model=EventsAccepted,
    responses=responses(401, 403, 413, 422, 429, 503),
    openapi_extra=_event_body(many=False),
)
async def post_event(request: Request, _: Caller) -> EventsAccepted:
    ctx: ApiContext = request.app.state.ctx
    body = await _body(request, ctx.settings.validation.max_event_bytes)
    result, record = _admit(ctx, 0, body, datetime.now(UTC))
    if record is None:
        ctx.metrics.events.labels("rejected").inc()
        raise ApiError(
            422,
            "invalid_event",
            result.message or "invalid event",
            {"reason": result.reason, "path": result.path, "event_id": result.event_id},
        )
    await _produce(ctx, [record])
    return EventsAccepted(accepted=1, rejected=0, results=[result])


@router.post(
    "/batch",
    summary="Send up to 500 events",
    status_code=202,
    response_model=EventsAccepted,
    responses=responses(401, 403, 413, 422, 429, 503),
    openapi_extra=_event_body(many=True),
)
async def post_events(request: Request, _: Caller) -> EventsAccepted:
    """Valid events are sent, invalid ones reported per event; 202 once Kafka acknowledged the valid ones."""
    ctx: ApiContext = request.app.state.ctx
    body = await _body(request, ctx.settings.api.max_batch_bytes)
    try:
        raws = _RAW_LIST.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(422, "invalid_json", f"the body is not a JSON array: {exc}") from exc
    limit = ctx.settings.api.max_batch_events
    if len(raws) > limit:
        raise ApiError(413, "too_many_events", f"at most {limit} events per request", {"limit": limit})
    now = datetime.now(UTC)
    admitted = [_admit(ctx, i, bytes(raw), now) for i, raw in enumerate(raws)]
    records = [record for _, record in admitted if record is not None]
    await _produce(ctx, records)
    ctx.metrics.events.labels("rejected").inc(len(admitted) - len(records))
    return EventsAccepted(
        accepted=len(records), rejected=len(admitted) - len(records), results=[r for r, _ in admitted]
    )


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"the body exceeds {limit} bytes", {"limit": limit})
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "payload_too_large", f"the body exceeds {limit} bytes", {"limit": limit})
    return bytes(body)


def _admit(ctx: ApiContext, index: int, raw: bytes, now: datetime) -> tuple[EventResult, Record | None]:
    event = validate_event(raw, now=now, limits=ctx.settings.validation.limits())
    if isinstance(event, Rejection):
        event_id = _event_id(raw)
        rejected = EventResult(
            index=index,
            event_id=event_id,
            status="rejected",
            reason=event.code.value,
            path=event.path,
            message=event.message,
        )
        return rejected, None
    topic = full_name(TOPIC_BY_EVENT_TYPE[event.type], ctx.settings.kafka.topic_prefix)
    return EventResult(index=index, event_id=event.event_id, status="accepted"), (topic, event.key.encode(), raw)


def _event_id(raw: bytes) -> str | None:
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    event_id = value.get("event_id") if isinstance(value, dict) else None
    return event_id if isinstance(event_id, str) else None


async def _produce(ctx: ApiContext, records: list[Record]) -> None:
    if not records:
        return
    try:
        await ctx.collector.send(records)
    except KafkaUnavailableError as exc:
        ctx.metrics.events.labels("unavailable").inc(len(records))
        retry = str(ctx.settings.api.retry_after_s)
        raise ApiError(
            503, "kafka_unavailable", "events cannot be stored now; retry", headers={"Retry-After": retry}
        ) from exc
    ctx.metrics.events.labels("accepted").inc(len(records))
