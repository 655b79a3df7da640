"""Erasure: ``DELETE /v1/profiles/{id}`` and ``GET /v1/erasures/{erasure_id}`` (docs/erasure.md).

202 only once the erasure record is on the ``erasures`` topic (what every worker and replay honours) and
the markers are in Redis (reads answer 404 from then on); the owning worker then deletes the profiles.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from profiles.erasure import requested_ids
from profiles.read import erasure_of
from profiles.store import ProfileStore
from profiles.timeutil import iso
from schemas import erasure as erasure_codec
from schemas.erasure import ErasureRecord
from schemas.topics import ERASURES, full_name
from services.api.auth import require
from services.api.collector import KafkaUnavailableError
from services.api.context import ApiContext
from services.api.errors import ApiError, responses
from services.api.keys import ApiKey

router = APIRouter(tags=["erasure"])
Admin = Annotated[ApiKey, Depends(require("admin"))]


class ErasureReceipt(BaseModel):
    erasure_id: str = Field(description="The receipt: ask `GET /v1/erasures/{erasure_id}` for progress.")
    status: Literal["pending", "completed"] = Field(
        description="`completed` once every profile of the customer is deleted."
    )
    requested_at: str
    profiles: int = Field(description="Profiles the erasure deletes (the customer's and merged anonymous ones).")
    profiles_erased: int

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "erasure_id": "er_5f0c2a9d8e7b4c1a9f3e2d1c0b9a8f7e",
                    "status": "pending",
                    "requested_at": "2026-11-23T12:00:00.000Z",
                    "profiles": 2,
                    "profiles_erased": 0,
                }
            ]
        }
    }


@router.delete(
    "/v1/profiles/{profile_id}",
    summary="Erase a customer and every id linked to it",
    status_code=202,
    response_model=ErasureReceipt,
    responses=responses(401, 403, 422, 429, 503),
)
async def erase_profile(
    request: Request,
    _: Admin,
    profile_id: Annotated[str, Path(min_length=1, max_length=256, examples=["c-1001"])],
) -> ErasureReceipt:
    """Any id (customer id, anonymous id, email) erases the customer it resolves to, with all its ids but
    those linked to another customer (a shared email they claimed first); an id no profile has yet is
    erased too. From then on the customer's events are refused, and other customers' events are applied
    without the erased ids they carry. Erasing again returns the first receipt."""
    ctx: ApiContext = request.app.state.ctx
    store = (await ctx.serving.current()).store
    # Under any spelling an earlier erasure marked (an email no profile had is marked lower-cased too).
    marked = await store.erased(requested_ids(profile_id))
    earlier = next(iter(marked.values()), None)
    if earlier is not None:
        return await _receipt(store, earlier)
    record = await erasure_of(store, f"er_{uuid.uuid4().hex}", profile_id, requested_at_ms=_now_ms())
    key = (record.profile_ids[0] if record.profile_ids else profile_id).encode()
    try:
        await ctx.collector.send(
            [(full_name(ERASURES, ctx.settings.kafka.topic_prefix), key, erasure_codec.encode(record))]
        )
    except KafkaUnavailableError as exc:
        retry = str(ctx.settings.api.retry_after_s)
        raise ApiError(
            503, "kafka_unavailable", "the erasure cannot be recorded now; retry", headers={"Retry-After": retry}
        ) from exc
    await store.record_erasures([record])
    return _status(record, set())


@router.get(
    "/v1/erasures/{erasure_id}",
    summary="Progress of an erasure",
    response_model=ErasureReceipt,
    responses=responses(401, 403, 404, 422, 429),
)
async def get_erasure(
    request: Request,
    _: Admin,
    erasure_id: Annotated[str, Path(pattern=r"^er_[0-9a-f]{32}$", examples=["er_5f0c2a9d8e7b4c1a9f3e2d1c0b9a8f7e"])],
) -> ErasureReceipt:
    ctx: ApiContext = request.app.state.ctx
    return await _receipt((await ctx.serving.current()).store, erasure_id)


async def _receipt(store: ProfileStore, erasure_id: str) -> ErasureReceipt:
    found = await store.erasure(erasure_id)
    if found is None:
        raise ApiError(404, "erasure_not_found", "no erasure has this receipt")
    return _status(*found)


def _status(record: ErasureRecord, done: set[str]) -> ErasureReceipt:
    erased = len(done & set(record.profile_ids))
    return ErasureReceipt(
        erasure_id=record.erasure_id,
        status="completed" if erased == len(record.profile_ids) else "pending",
        requested_at=iso(record.requested_at_ms),
        profiles=len(record.profile_ids),
        profiles_erased=erased,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
