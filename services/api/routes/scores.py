"""``/v1/profiles/{id}/scores`` and ``/v1/scores/batch``: every model's score for a profile, now or at
``as_of`` (``profiles.read.read_scores``, ``services.model_cache``; docs/models.md)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from profiles.models.scoring import Score
from profiles.read import ScoresRead, read_scores
from profiles.store import Resolution
from profiles.timeutil import iso
from services.api.auth import require
from services.api.context import ApiContext
from services.api.errors import ApiError, ErrorDetail, checked_as_of, read_failed, responses
from services.api.keys import ApiKey
from services.api.serving import Served

router = APIRouter(tags=["scores"])
Caller = Annotated[ApiKey, Depends(require("scores:read"))]


class ScoreOut(BaseModel):
    value: float = Field(description="A probability for classifiers; net spend in the base currency for clv_90d.")
    model: str
    model_version: int | None = Field(description="The snapshot that produced it; null: no model trained yet.")
    computed_at: str = Field(description="When this process computed it (RFC 3339).")
    cold_start: bool = Field(description="True: the documented heuristic, the model has seen too few examples.")


class ProfileScores(BaseModel):
    profile_id: str = Field(description="The canonical profile the requested id resolves to.")
    as_of: str = Field(description="The instant the features were computed for (RFC 3339).")
    scores: dict[str, ScoreOut]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "profile_id": "c-1001",
                    "as_of": "2026-11-23T12:00:00.000Z",
                    "scores": {
                        "purchase_propensity": {
                            "value": 0.31,
                            "model": "purchase_propensity",
                            "model_version": 12,
                            "computed_at": "2026-11-23T12:00:00.004Z",
                            "cold_start": False,
                        }
                    },
                }
            ]
        }
    }


class ScoresBatchIn(BaseModel):
    ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, description="Customer ids, anonymous ids or emails (at most `api.max_batch_ids`)."
    )
    as_of: datetime | None = Field(None, description="As for one profile.")

    model_config = {"json_schema_extra": {"examples": [{"ids": ["c-1001", "ann@example.com"]}]}}


class ScoresBatchItem(BaseModel):
    id: str
    status: Literal["found", "not_found", "error"]
    result: ProfileScores | None
    error: ErrorDetail | None


class ScoresBatchOut(BaseModel):
    results: list[ScoresBatchItem] = Field(description="One per distinct requested id, in request order.")


AsOfQuery = Annotated[
    datetime | None,
    Query(
        description="RFC 3339 instant with a UTC offset, in the years 0001 to 9999 UTC; default now. Must not be "
        "before the profile's last event.",
        examples=["2026-11-23T12:00:00Z"],
    ),
]


@router.get(
    "/v1/profiles/{profile_id}/scores",
    summary="A profile's scores",
    response_model=ProfileScores,
    responses=responses(401, 403, 404, 422, 429, 503),
)
async def get_scores(
    request: Request,
    _: Caller,
    profile_id: Annotated[str, Path(min_length=1, max_length=256, examples=["c-1001"])],
    as_of: AsOfQuery = None,
) -> ProfileScores:
    ctx: ApiContext = request.app.state.ctx
    return await answer_scores(ctx, await ctx.serving.current(), profile_id, as_of=as_of)


async def answer_scores(
    ctx: ApiContext,
    served: Served,
    profile_id: str,
    *,
    as_of: datetime | None = None,
    resolution: Resolution | None = None,
) -> ProfileScores:
    """The answer to an admitted caller (the route's, and ``services.api.hot_reads``')."""
    result = (await _read(ctx, served, [profile_id], as_of, resolution))[profile_id]
    if result.error is not None:
        raise read_failed(result.error)
    if result.scores is None or result.profile_id is None:
        raise ApiError(404, "profile_not_found", "no profile has this id")
    return _out(result.profile_id, result.scores)


@router.post(
    "/v1/scores/batch",
    summary="Several profiles' scores",
    response_model=ScoresBatchOut,
    responses=responses(401, 403, 413, 422, 429),
)
async def get_scores_batch(request: Request, _: Caller, body: ScoresBatchIn) -> ScoresBatchOut:
    ctx: ApiContext = request.app.state.ctx
    limit = ctx.settings.api.max_batch_ids
    if len(body.ids) > limit:
        raise ApiError(413, "too_many_ids", f"at most {limit} ids per request", {"limit": limit})
    results = []
    for any_id, read in (await _read(ctx, await ctx.serving.current(), body.ids, body.as_of)).items():
        if read.error is not None:
            failed = read_failed(read.error)
            error = ErrorDetail(code=failed.code, message=failed.message, details=failed.details)
            results.append(ScoresBatchItem(id=any_id, status="error", result=None, error=error))
        elif read.scores is None or read.profile_id is None:
            results.append(ScoresBatchItem(id=any_id, status="not_found", result=None, error=None))
        else:
            results.append(
                ScoresBatchItem(id=any_id, status="found", result=_out(read.profile_id, read.scores), error=None)
            )
    return ScoresBatchOut(results=results)


async def _read(
    ctx: ApiContext, served: Served, ids: list[str], as_of: datetime | None, resolution: Resolution | None = None
) -> dict[str, ScoresRead]:
    as_of_ms = checked_as_of(as_of)
    models = await served.models.current()
    now_ms = int(time.time() * 1000)
    return await read_scores(
        served.store,
        ids,
        ctx.fold_config,
        served.models.specs,
        models,
        as_of_ms=as_of_ms,
        now_ms=now_ms,
        resolution=resolution,
    )


def _out(profile_id: str, scores: dict[str, Score]) -> ProfileScores:
    as_of_ms = next(iter(scores.values())).as_of_ms
    return ProfileScores(
        profile_id=profile_id,
        as_of=iso(as_of_ms),
        scores={
            name: ScoreOut(
                value=s.value,
                model=s.model,
                model_version=s.model_version,
                computed_at=iso(s.computed_at_ms),
                cold_start=s.cold_start,
            )
            for name, s in scores.items()
        },
    )
