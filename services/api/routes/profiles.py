"""``/v1/profiles``: live profiles by any known id (customer id, anonymous id or email)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from profiles.read import ProfileRead, read_profiles
from profiles.store import Resolution
from schemas.profile import ProfileView
from services.api.auth import require
from services.api.context import ApiContext
from services.api.errors import ApiError, checked_as_of, read_failed, responses
from services.api.keys import ApiKey
from services.api.responses import JsonResponse
from services.api.serving import Served

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])
Caller = Annotated[ApiKey, Depends(require("profiles:read"))]
#: Always returned, whatever ``fields`` asks for: who the profile is and how fresh it is.
ALWAYS: Final = ("profile_id", "meta")
SELECTABLE: Final = tuple(name for name in ProfileView.__struct_fields__ if name not in ALWAYS)

_PROFILE_RESPONSE = {
    "description": "The canonical profile; with `fields`, only those fields beside `profile_id` and `meta`.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProfileResponse"}}},
}

FieldsQuery = Annotated[
    str | None,
    Query(
        description=f"Comma-separated top-level fields to return: {', '.join(SELECTABLE)}. `profile_id` and `meta` "
        "always come, and may be named (`fields=meta`: only those two).",
        examples=["transactions,rfm,windows"],
        max_length=1000,
    ),
]
AsOfQuery = Annotated[
    datetime | None,
    Query(
        description="RFC 3339 instant with a UTC offset to compute windows and recency for, in the years 0001 "
        "to 9999 UTC; default now. Must not be before the profile's last event.",
        examples=["2026-11-23T12:00:00Z"],
    ),
]


class BatchRequest(BaseModel):
    ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, description="Customer ids, anonymous ids or emails (at most `api.max_batch_ids`)."
    )
    fields: str | None = Field(None, description="As for a single profile.", max_length=1000)
    as_of: datetime | None = Field(None, description="As for a single profile.")

    model_config = {"json_schema_extra": {"examples": [{"ids": ["c-1001", "ann@example.com"], "fields": "rfm"}]}}


@router.get(
    "/{profile_id}",
    summary="A live profile",
    response_class=JsonResponse,
    responses={200: _PROFILE_RESPONSE, **responses(401, 403, 404, 422, 429, 503)},
)
async def get_profile(
    request: Request,
    _: Caller,
    profile_id: Annotated[str, Path(min_length=1, max_length=256, examples=["c-1001"])],
    fields: FieldsQuery = None,
    as_of: AsOfQuery = None,
) -> JsonResponse:
    ctx: ApiContext = request.app.state.ctx
    return await answer_profile(ctx, await ctx.serving.current(), profile_id, fields_wanted(fields), as_of=as_of)


async def answer_profile(
    ctx: ApiContext,
    served: Served,
    profile_id: str,
    wanted: set[str] | None,
    *,
    as_of: datetime | None = None,
    resolution: Resolution | None = None,
) -> JsonResponse:
    """The answer to an admitted caller (the route's, and ``services.api.hot_reads``')."""
    result = (await _read(ctx, served, [profile_id], as_of, resolution))[profile_id]
    if result.view is None and result.error is None:
        raise ApiError(404, "profile_not_found", "no profile has this id")
    return JsonResponse(_answer(result, wanted))


@router.post(
    "/batch",
    summary="Several live profiles",
    response_class=JsonResponse,
    responses={
        200: {
            "description": "One result per distinct requested id, in request order.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProfileBatchResponse"}}},
        },
        **responses(401, 403, 413, 422, 429),
    },
)
async def get_profiles(request: Request, _: Caller, body: BatchRequest) -> JsonResponse:
    ctx: ApiContext = request.app.state.ctx
    limit = ctx.settings.api.max_batch_ids
    if len(body.ids) > limit:
        raise ApiError(413, "too_many_ids", f"at most {limit} ids per request", {"limit": limit})
    wanted = fields_wanted(body.fields)
    reads = await _read(ctx, await ctx.serving.current(), body.ids, body.as_of)
    results: list[dict[str, Any]] = []
    for any_id, result in reads.items():
        if result.view is None and result.error is None:
            results.append({"id": any_id, "status": "not_found", "profile": None, "error": None})
        elif result.error is not None:
            failed = read_failed(result.error)
            error = {"code": failed.code, "message": failed.message, "details": failed.details}
            results.append({"id": any_id, "status": "error", "profile": None, "error": error})
        else:
            results.append({"id": any_id, "status": "found", "profile": _answer(result, wanted), "error": None})
    return JsonResponse({"results": results})


async def _read(
    ctx: ApiContext, served: Served, ids: list[str], as_of: datetime | None, resolution: Resolution | None = None
) -> dict[str, ProfileRead]:
    as_of_ms = checked_as_of(as_of)
    thresholds = await served.population.thresholds()
    now_ms = int(time.time() * 1000)
    return await read_profiles(
        served.store,
        ids,
        ctx.fold_config,
        as_of_ms=as_of_ms,
        now_ms=now_ms,
        thresholds=thresholds,
        resolution=resolution,
    )


def _answer(result: ProfileRead, wanted: set[str] | None) -> dict[str, Any]:
    if result.error is not None:
        raise read_failed(result.error)
    assert result.view is not None
    if wanted is None:
        return result.view
    return {name: value for name, value in result.view.items() if name in wanted or name in ALWAYS}


def fields_wanted(fields: str | None) -> set[str] | None:
    if fields is None:
        return None
    names = {name.strip() for name in fields.split(",") if name.strip()}
    # Naming a field that always comes is not an error: a caller asking for `meta` alone wants only freshness.
    unknown = sorted(names - set(SELECTABLE) - set(ALWAYS))
    if unknown:
        raise ApiError(
            422, "unknown_field", f"unknown fields {unknown}", {"unknown": unknown, "known": list(SELECTABLE)}
        )
    return names
