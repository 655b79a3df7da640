"""Liveness, readiness and Prometheus metrics (no API key: for orchestrators and scrapers)."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from redis.exceptions import RedisError

from services.api.context import ApiContext
from services.api.errors import responses
from services.api.metrics import ModelCollector, WorkerCollector
from services.api.responses import JsonResponse

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    redis: bool
    kafka: bool


@router.get("/healthz", summary="The process is up", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Redis and Kafka are reachable",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Redis or Kafka is unreachable."}, **responses()},
)
async def readyz(request: Request) -> JsonResponse:
    ctx: ApiContext = request.app.state.ctx
    redis_ok, kafka_ok = await asyncio.gather(_redis_ok(ctx), ctx.collector.ready())
    ready = redis_ok and kafka_ok
    body = Readiness(status="ready" if ready else "unavailable", redis=redis_ok, kafka=kafka_ok)
    return JsonResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Exposition format."}},
)
async def metrics(request: Request) -> Response:
    """This process's request figures, the profile workers' (events by outcome, freshness, lag) and the
    models it serves (version, examples, rolling metrics beside the baselines')."""
    ctx: ApiContext = request.app.state.ctx
    workers = CollectorRegistry(auto_describe=True)
    with contextlib.suppress(RedisError, OSError):  # Redis down: this process's own figures still answer
        workers.register(WorkerCollector(await ctx.workers.snapshot()))
        served = await ctx.serving.current()
        workers.register(ModelCollector(await served.models.current()))
    return Response(generate_latest(ctx.metrics.registry) + generate_latest(workers), media_type=CONTENT_TYPE_LATEST)


async def _redis_ok(ctx: ApiContext) -> bool:
    try:
        return bool(await asyncio.wait_for(ctx.redis.ping(), 1.0))
    except (RedisError, OSError, TimeoutError):
        return False
