"""``create_app(settings)``: the FastAPI application. Clients are created in its lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from profiles.models.specs import import_river
from profiles.store import ProfileStore
from schemas.events import AnyEvent
from schemas.profile import ProfileView
from services.api.auth import KeyCache, check_key_first
from services.api.collector import EventCollector
from services.api.context import ApiContext
from services.api.draining import Draining
from services.api.errors import install_error_handlers
from services.api.hot_reads import HotReads
from services.api.keys import KeyStore
from services.api.metrics import ApiMetrics
from services.api.middleware import ApiMiddleware
from services.api.ratelimit import RateLimiter
from services.api.responses import JsonResponse
from services.api.routes import erasures, events, health, profiles, scores, segment_changes, segments, webhooks
from services.api.serving import ServingNamespace
from services.api.stream_slots import StreamSlots
from services.api.worker_view import WorkerView
from services.redis_client import make_redis
from services.settings import Settings

DESCRIPTION = """Live customer profiles and the HTTP event collector of Rapport.

Authenticate with `Authorization: Bearer <API key>` (`rapport keys create`). Every error is a 4xx or 503
with a body `{"error": {"code", "message", "details"}}`; `code` is stable.
"""


def create_app(settings: Settings, draining: Draining | None = None) -> FastAPI:
    """``draining``: the flag the server sets when it is asked to stop (``services.api.draining``)."""
    metrics = ApiMetrics()
    draining = draining or Draining()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import_river()
        redis = make_redis(settings)
        collector = EventCollector(settings)
        store = ProfileStore(redis, settings.profile.namespace)
        workers = WorkerView(settings, store)
        app.state.ctx = ApiContext(
            settings=settings,
            redis=redis,
            store=store,
            serving=ServingNamespace(redis, settings),
            fold_config=settings.profile.fold_config(),
            keys=KeyStore(redis),
            key_cache=KeyCache(settings.api.key_cache_s),
            limiter=RateLimiter(redis),
            collector=collector,
            metrics=metrics,
            workers=workers,
            draining=draining,
            streams=StreamSlots(settings.api.max_change_streams),
        )
        try:
            yield
        finally:
            workers.close()
            await collector.close()
            await redis.aclose()

    app = FastAPI(
        title="Rapport",
        version="1",
        description=DESCRIPTION,
        default_response_class=JsonResponse,
        lifespan=lifespan,
    )
    install_error_handlers(app, check_key_first)
    app.include_router(profiles.router)
    app.include_router(scores.router)
    app.include_router(events.router)
    app.include_router(erasures.router)
    app.include_router(segments.router)
    app.include_router(segment_changes.router)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    if settings.api.hot_reads:
        # Added first, so inside ApiMiddleware: its answers are timed and get CORS like the routes'.
        app.add_middleware(HotReads, metrics=metrics)
    app.add_middleware(ApiMiddleware, metrics=metrics, max_body_bytes=settings.api.max_batch_bytes)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the msgspec contracts (events, profile view) the routes refer to."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    (event, _view), contracts = msgspec.json.schema_components(
        [AnyEvent, ProfileView], ref_template="#/components/schemas/{name}"
    )
    components.update(contracts)
    components["Event"] = event
    partial = dict(contracts["ProfileView"])
    partial["required"] = ["profile_id", "meta"]
    partial["title"] = "ProfileResponse"
    components["ProfileResponse"] = partial
    components["ProfileBatchResponse"] = {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "status", "profile", "error"],
                    "properties": {
                        "id": {"type": "string"},
                        "status": {"enum": ["found", "not_found", "error"]},
                        "profile": {"anyOf": [{"$ref": "#/components/schemas/ProfileResponse"}, {"type": "null"}]},
                        "error": {"anyOf": [{"$ref": "#/components/schemas/ErrorDetail"}, {"type": "null"}]},
                    },
                },
            }
        },
    }
    app.openapi_schema = schema
    return schema
