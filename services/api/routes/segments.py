"""``/v1/segments``: segment definitions (CEL rules), live member counts, members, previews; and
``/v1/profiles/{id}/segments``. Rules are type-checked when saved (docs/segments.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from profiles.models.scoring import score_values
from profiles.read import canonical_state
from profiles.segment_store import SegmentStore
from profiles.segments import DefinitionError, RuleError, SegmentDefinition, compile_rule, evaluate
from profiles.segments.definitions import MAX_DESCRIPTION, NAME_PATTERN
from profiles.segments.membership import current_memberships
from profiles.store import rfm_position
from profiles.view import render
from schemas.topics import RESOLVED
from services.api.auth import require
from services.api.context import ApiContext
from services.api.errors import ApiError, responses
from services.api.keys import ApiKey

router = APIRouter(tags=["segments"])
Admin = Annotated[ApiKey, Depends(require("segments:admin"))]
Reader = Annotated[ApiKey, Depends(require("profiles:read"))]
SegmentName = Annotated[str, Path(pattern=NAME_PATTERN, examples=["active_7d"])]
RULE_EXAMPLE = 'windows["7d"].orders >= 2 && rfm.recency_days < 30'


class SegmentIn(BaseModel):
    description: str = Field("", max_length=MAX_DESCRIPTION)
    rule: str = Field(min_length=1, max_length=2000, description="A CEL expression over the profile and scores.")

    model_config = {
        "json_schema_extra": {"examples": [{"description": "Bought twice this week", "rule": RULE_EXAMPLE}]}
    }


class Evaluation(BaseModel):
    version: int = Field(description="The version existing profiles are being evaluated against.")
    sweep: int = Field(
        0,
        description="0: the evaluation the definition itself caused; then one more each time the served versions "
        "of the models the rule reads changed and every existing profile was evaluated again.",
    )
    models: dict[str, int | None] = Field(
        default_factory=dict,
        description="The served versions of the models the rule reads when this evaluation started (null: none, "
        "the cold-start heuristic).",
    )
    profiles_evaluated: int
    complete: bool = Field(description="Every partition's owner went through every existing profile.")


class SegmentOut(BaseModel):
    name: str
    description: str
    rule: str
    version: int = Field(description="Bumped by every saved change; carried by change events.")
    updated_at: str
    members: int = Field(description="Live member count.")
    evaluation: Evaluation | None = Field(
        None, description="Progress of evaluating existing profiles against this version (null: not started)."
    )


class SegmentList(BaseModel):
    segments: list[SegmentOut]


class MembersPage(BaseModel):
    members: list[str] = Field(description="Profile ids in id order.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")


class PreviewIn(BaseModel):
    rule: str = Field(min_length=1, max_length=2000)
    sample: int = Field(10, ge=0, le=100, description="How many matching profile ids to return.")

    model_config = {"json_schema_extra": {"examples": [{"rule": RULE_EXAMPLE, "sample": 5}]}}


class PreviewOut(BaseModel):
    count: int = Field(description="Profiles the rule selects among those scanned.")
    scanned: int
    complete: bool = Field(
        description="False when the scan stopped at `api.preview_max_profiles`, or some profiles were unreadable."
    )
    sample: list[str]
    unreadable: int = Field(
        0, description="Stored profiles this version cannot decode: not evaluated, not counted (docs/streams.md)."
    )


class ProfileSegment(BaseModel):
    name: str
    version: int = Field(description="The segment version the profile entered under.")


class ProfileSegments(BaseModel):
    profile_id: str
    segments: list[ProfileSegment]


async def _store(ctx: ApiContext) -> SegmentStore:
    """The served namespace's: after a promotion, definitions are read and saved where the profiles are
    (its workers evaluate them after the hand-over, docs/replay.md)."""
    return (await ctx.serving.current()).segments


@router.put(
    "/v1/segments/{name}",
    summary="Create or change a segment",
    response_model=SegmentOut,
    responses=responses(401, 403, 422, 429),
)
async def put_segment(request: Request, _: Admin, name: SegmentName, body: SegmentIn) -> SegmentOut:
    """The rule is type-checked against the profile schema: an error names its position and field (422
    `invalid_rule`). Saving the same description and rule again changes nothing (same version)."""
    store = await _store(request.app.state.ctx)
    try:
        saved = await store.save(name, body.description, body.rule, now_ms=int(time.time() * 1000))
    except RuleError as exc:
        raise _invalid_rule(exc) from exc
    except DefinitionError as exc:
        raise ApiError(422, "invalid_segment", str(exc)) from exc
    return await _described(store, saved, request.app.state.ctx)


@router.get(
    "/v1/segments",
    summary="Every segment, with live member counts",
    response_model=SegmentList,
    responses=responses(401, 403, 429, 503),
)
async def list_segments(request: Request, _: Admin) -> SegmentList:
    store = await _store(request.app.state.ctx)
    definitions = await store.definitions()
    counts = await store.counts(list(definitions))
    return SegmentList(segments=[_out(d, counts[name]) for name, d in definitions.items()])


@router.get(
    "/v1/segments/{name}",
    summary="One segment",
    response_model=SegmentOut,
    responses=responses(401, 403, 404, 422, 429, 503),
)
async def get_segment(request: Request, _: Admin, name: SegmentName) -> SegmentOut:
    store = await _store(request.app.state.ctx)
    return await _described(store, await _existing(store, name), request.app.state.ctx)


@router.delete(
    "/v1/segments/{name}",
    summary="Delete a segment",
    status_code=204,
    response_class=Response,
    responses=responses(401, 403, 404, 422, 429),
)
async def delete_segment(request: Request, _: Admin, name: SegmentName) -> Response:
    """Members get no exit events: the segment itself is gone (docs/segments.md)."""
    if not await (await _store(request.app.state.ctx)).delete(name):
        raise ApiError(404, "segment_not_found", "no segment has this name")
    return Response(status_code=204)


@router.get(
    "/v1/segments/{name}/members",
    summary="Members, a page at a time",
    response_model=MembersPage,
    responses=responses(401, 403, 404, 422, 429, 503),
)
async def segment_members(
    request: Request,
    _: Admin,
    name: SegmentName,
    cursor: Annotated[str | None, Query(max_length=256, description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MembersPage:
    store = await _store(request.app.state.ctx)
    await _existing(store, name)
    members = await store.members(name, cursor, limit)
    return MembersPage(members=members, next_cursor=members[-1] if len(members) == limit else None)


@router.post(
    "/v1/segments/preview",
    summary="How many profiles a draft rule selects (nothing is saved or published)",
    response_model=PreviewOut,
    responses=responses(401, 403, 422, 429),
)
async def preview_segment(request: Request, _: Admin, body: PreviewIn) -> PreviewOut:
    ctx: ApiContext = request.app.state.ctx
    try:
        rule = compile_rule(body.rule)
    except RuleError as exc:
        raise _invalid_rule(exc) from exc
    now_ms = int(time.time() * 1000)
    served = await ctx.serving.current()
    thresholds = await served.population.thresholds()
    # The scores the worker would give the rule: the served models' (or their cold-start heuristics).
    reads_scores = any(path[0] == "scores" for path in rule.reads)
    models = await served.models.current() if reads_scores else {}
    limit = ctx.settings.api.preview_max_profiles
    count = scanned = 0
    sample: list[str] = []
    seen: set[str] = set()  # SCAN may return a key twice
    unreadable: set[str] = set()
    async for batch in served.store.scan_profiles():
        for pid, stored in batch.items():
            if scanned >= limit:
                break  # a SCAN batch holds up to 500 profiles: evaluating all of them overshot the limit by 499
            if stored.unreadable is not None:
                unreadable.add(pid)
                continue
            state = stored.decoded
            if state is None or state.merged_into is not None or pid in seen:
                continue
            seen.add(pid)
            scanned += 1
            position = rfm_position(state)
            rfm = thresholds.scores(position) if position is not None else None
            at_ms = max(now_ms, state.last_event_ms or 0)
            view = render(state, at_ms, ctx.fold_config, rfm=rfm)
            scores = score_values(state, at_ms, ctx.fold_config, ctx.serving.specs, models) if reads_scores else {}
            if evaluate(rule, view, scores).member:
                count += 1
                if len(sample) < body.sample:
                    sample.append(pid)
        if scanned >= limit:
            return PreviewOut(
                count=count, scanned=scanned, complete=False, sample=sorted(sample), unreadable=len(unreadable)
            )
    return PreviewOut(
        count=count, scanned=scanned, complete=not unreadable, sample=sorted(sample), unreadable=len(unreadable)
    )


@router.get(
    "/v1/profiles/{profile_id}/segments",
    summary="The segments a profile is in",
    response_model=ProfileSegments,
    responses=responses(401, 403, 404, 422, 429, 503),
)
async def profile_segments(
    request: Request,
    _: Reader,
    profile_id: Annotated[str, Path(min_length=1, max_length=256, examples=["c-1001"])],
) -> ProfileSegments:
    ctx: ApiContext = request.app.state.ctx
    served = await ctx.serving.current()
    state = await canonical_state(served.store, profile_id)
    if state is None:
        raise ApiError(404, "profile_not_found", "no profile has this id")
    canonical = state.profile_id
    stored, definitions = await asyncio.gather(served.segments.segments_of(canonical), served.segments.definitions())
    entered = current_memberships(stored, definitions)
    return ProfileSegments(
        profile_id=canonical,
        segments=[ProfileSegment(name=name, version=version) for name, version in sorted(entered.items())],
    )


def _invalid_rule(exc: RuleError) -> ApiError:
    details = {"position": exc.position, "line": exc.line, "column": exc.column, "field": exc.field}
    return ApiError(422, "invalid_rule", exc.message, details)


async def _existing(store: SegmentStore, name: str) -> SegmentDefinition:
    definition = await store.definition(name)
    if definition is None:
        raise ApiError(404, "segment_not_found", "no segment has this name")
    return definition


def _out(definition: SegmentDefinition, members: int, evaluation: Evaluation | None = None) -> SegmentOut:
    return SegmentOut(
        name=definition.name,
        description=definition.description,
        rule=definition.rule,
        version=definition.version,
        updated_at=definition.updated_at,
        members=members,
        evaluation=evaluation,
    )


async def _described(store: SegmentStore, definition: SegmentDefinition, ctx: ApiContext) -> SegmentOut:
    """The definition with its member count and the progress of evaluating existing profiles."""
    job = await store.backfill(definition.name)
    evaluation = None
    if job is not None and job.version == definition.version:
        partitions = RESOLVED.partition_count(ctx.settings.kafka.event_partitions)
        evaluation = Evaluation(
            version=job.version,
            sweep=job.sweep,
            models=job.models or {},
            profiles_evaluated=job.evaluated,
            complete=job.done(partitions),
        )
    return _out(definition, (await store.counts([definition.name]))[definition.name], evaluation)
