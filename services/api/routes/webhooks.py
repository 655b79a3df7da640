"""``/v1/webhooks``: endpoints that receive segment changes (``rapport deliver`` POSTs them), their delivery
logs, pausing and resuming them. The signing secret is shown once, when the webhook is registered."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import AnyHttpUrl, BaseModel, Field

from profiles.segments.definitions import NAME_PATTERN
from profiles.timeutil import iso
from services.api.auth import require
from services.api.context import ApiContext
from services.api.errors import ApiError, responses
from services.api.keys import ApiKey
from services.webhooks.store import Pause, TooManyWebhooksError, Webhook, WebhookStore
from services.webhooks.targets import literal_refusal

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
Admin = Annotated[ApiKey, Depends(require("segments:admin"))]
WebhookId = Annotated[str, Path(pattern=r"^wh_[0-9a-f]{16}$", examples=["wh_0123456789abcdef"])]


class WebhookIn(BaseModel):
    url: AnyHttpUrl
    segments: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, max_length=100, description="Segments to receive changes of; empty: all."
    )

    model_config = {"json_schema_extra": {"examples": [{"url": "https://crm.example/hooks/rapport", "segments": []}]}}


class PauseOut(BaseModel):
    at: str
    reason: str = Field(examples=["the endpoint answered 410 Gone to change 3f2a…", "paused through the API"])


class WebhookOut(BaseModel):
    webhook_id: str
    url: str
    segments: list[str]
    created_at: str
    paused: PauseOut | None = Field(
        description="Deliveries stopped since then, until resumed (POST …/resume); they resume at the first change "
        "not delivered. null: delivering."
    )


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Verify `Rapport-Signature` with it (docs/segments.md). Shown only now.")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class DeliveryOut(BaseModel):
    change_id: str
    segment: str
    status: Literal["delivered", "dead_lettered"]
    attempts: int
    last_status_code: int | None
    last_error: str | None = Field(description="Why the last attempt failed (e.g. `HTTP 503`); null once delivered.")
    at: str


class DeliveryLog(BaseModel):
    deliveries: list[DeliveryOut] = Field(description="Newest first.")


def _store(request: Request) -> WebhookStore:
    ctx: ApiContext = request.app.state.ctx
    return WebhookStore(ctx.redis, ctx.settings.profile.namespace)


@router.post(
    "",
    summary="Register a webhook",
    status_code=201,
    response_model=WebhookCreated,
    responses=responses(401, 403, 409, 422, 429),
)
async def register(request: Request, _: Admin, body: WebhookIn) -> WebhookCreated:
    ctx: ApiContext = request.app.state.ctx
    refused = None if ctx.settings.webhooks.private_targets else literal_refusal(body.url.host or "")
    if refused is not None:
        raise ApiError(
            422,
            "webhook_target_not_public",
            f"{refused}: the deliverer only reaches public addresses unless webhooks.private_targets is set",
            {"url": str(body.url)},
        )
    try:
        hook = await _store(request).register(str(body.url), body.segments, limit=ctx.settings.webhooks.max_registered)
    except TooManyWebhooksError as exc:
        raise ApiError(409, "too_many_webhooks", str(exc), {"limit": exc.limit}) from None
    return WebhookCreated(**_out(hook, None).model_dump(), secret=hook.secret)


@router.get("", summary="Registered webhooks", response_model=WebhookList, responses=responses(401, 403, 429))
async def list_webhooks(request: Request, _: Admin) -> WebhookList:
    return WebhookList(webhooks=[_out(h, pause) for h, pause in await _store(request).all()])


@router.post(
    "/{webhook_id}/pause",
    summary="Pause a webhook's deliveries",
    response_model=WebhookOut,
    responses=responses(401, 403, 404, 422, 429),
)
async def pause(request: Request, _: Admin, webhook_id: WebhookId) -> WebhookOut:
    """The deliverers stop sending to it within `webhooks.refresh_s`; changes keep coming to its position in
    `segments.changes`, and are sent when it is resumed. A batch in flight is sent again then (at least once)."""
    store = _store(request)
    if not await store.pause(webhook_id, "paused through the API"):
        raise ApiError(404, "webhook_not_found", "no webhook has this id")
    return await _current(store, webhook_id)


@router.post(
    "/{webhook_id}/resume",
    summary="Resume a webhook's deliveries",
    response_model=WebhookOut,
    responses=responses(401, 403, 404, 422, 429),
)
async def resume(request: Request, _: Admin, webhook_id: WebhookId) -> WebhookOut:
    """From the first change not delivered: the one its endpoint answered 410 Gone to, if that paused it. Resuming
    a webhook that is not paused changes nothing."""
    store = _store(request)
    await store.resume(webhook_id)
    return await _current(store, webhook_id)


@router.delete(
    "/{webhook_id}",
    summary="Remove a webhook",
    status_code=204,
    response_class=Response,
    responses=responses(401, 403, 404, 422, 429),
)
async def remove(request: Request, _: Admin, webhook_id: WebhookId) -> Response:
    if not await _store(request).remove(webhook_id):
        raise ApiError(404, "webhook_not_found", "no webhook has this id")
    return Response(status_code=204)


@router.get(
    "/{webhook_id}/deliveries",
    summary="A webhook's delivery log",
    response_model=DeliveryLog,
    responses=responses(401, 403, 404, 422, 429),
)
async def deliveries(
    request: Request, _: Admin, webhook_id: WebhookId, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> DeliveryLog:
    store = _store(request)
    await _current(store, webhook_id)
    entries = await store.deliveries(webhook_id, limit)
    return DeliveryLog(
        deliveries=[
            DeliveryOut(
                change_id=d.change_id,
                segment=d.segment,
                status=d.status,
                attempts=d.attempts,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                at=iso(d.at_ms) or "",
            )
            for d in entries
        ]
    )


async def _current(store: WebhookStore, webhook_id: str) -> WebhookOut:
    found = await store.get(webhook_id)
    if found is None:
        raise ApiError(404, "webhook_not_found", "no webhook has this id")
    return _out(*found)


def _out(hook: Webhook, pause: Pause | None) -> WebhookOut:
    return WebhookOut(
        webhook_id=hook.webhook_id,
        url=hook.url,
        segments=hook.segments,
        created_at=iso(hook.created_at_ms) or "",
        paused=None if pause is None else PauseOut(at=iso(pause.at_ms) or "", reason=pause.reason),
    )
