"""The two reads a web page makes on every view, ``GET /v1/profiles/{id}`` and ``GET /v1/profiles/{id}/scores``,
answered beneath FastAPI's router and dependency injection, with one Redis round trip.

Why: at the 2,500 requests/s one process must serve, a request may cost about 0.4 ms of a core. Routing,
dependency solving (the key, the path and query validation) and a round trip of its own for the rate limit
cost more than that before a profile is read (docs/benchmarks.md, "Serving API"). Here the rate limit, the
id's resolution and the profile's load go to Redis in one command (a script), and the routes' own functions
(``answer_profile``, ``answer_scores``) compute the answer.

The FastAPI routes stay the definition: they document the contract (OpenAPI) and answer every request this
path declines. It takes a request only when its answer cannot differ from the route's: a well-formed bearer
token of a live key that holds the route's scope and may be used from the request's origin, an id the route
accepts, no query string but ``fields`` (profiles). Anything else falls through *before* the rate limit
counts the request, so the route sees it as if this path did not exist.
``tests/integration/test_api_hot_reads.py`` sends the same requests both ways and compares the answers.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl

from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.auth import rate_limited
from services.api.context import ApiContext
from services.api.errors import ApiError, error_response, redis_unavailable
from services.api.keys import ApiKey, parse_token
from services.api.metrics import ApiMetrics
from services.api.responses import JsonResponse
from services.api.routes.profiles import answer_profile, fields_wanted
from services.api.routes.scores import answer_scores

# Starlette's ``{profile_id}`` is ``[^/]+``; the routes bound it to 1..256 characters.
_PATH: Final = re.compile(r"^/v1/profiles/(?P<id>[^/]{1,256})(?P<scores>/scores)?$")
PROFILE_ROUTE: Final = "/v1/profiles/{profile_id}"
SCORES_ROUTE: Final = "/v1/profiles/{profile_id}/scores"


class RouteLabel:
    """What ``scope["route"]`` holds for the metrics middleware: the template, never the id."""

    def __init__(self, path: str) -> None:
        self.path = path


_LABELS: Final = {False: RouteLabel(PROFILE_ROUTE), True: RouteLabel(SCORES_ROUTE)}


class HotReads:
    """ASGI middleware: answers the requests described above, hands every other one to ``app``."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        match = _PATH.match(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        response = await self._answer(scope, match["id"], match["scores"] is not None)
        if response is None:
            await self.app(scope, receive, send)
            return
        label = _LABELS[match["scores"] is not None]
        scope["route"] = label
        self.metrics.hot_reads.labels(label.path).inc()
        await response(scope, receive, send)

    async def _answer(self, scope: Scope, profile_id: str, scores: bool) -> JsonResponse | None:
        """The answer, or None: the route must answer (nothing was counted)."""
        simple, wanted = _fields(scope["query_string"], allowed=not scores)
        if not simple:
            return None
        ctx: ApiContext = scope["app"].state.ctx
        try:
            admitted = await _admitted(ctx, scope, "scores:read" if scores else "profiles:read")
            if admitted is None:
                return None
            key, origin = admitted
            served = await ctx.serving.current()
            keys = served.store.resolution_keys(profile_id)
            wait_s, values = await ctx.limiter.admit_and_read(key.key_id, key.rate_per_s, keys)
            if wait_s > 0:
                raise rate_limited(key, wait_s)
            if key.publishable and origin is not None:
                # Once past the rate limit, as the route's dependency sets it: its 429 and 503 carry none.
                scope.setdefault("state", {})["cors_origin"] = origin
            resolution = served.store.resolution([profile_id], [values])
            if scores:
                answer = await answer_scores(ctx, served, profile_id, resolution=resolution)
                return JsonResponse(answer.model_dump(mode="json"))
            return await answer_profile(ctx, served, profile_id, wanted, resolution=resolution)
        except ApiError as error:
            return error_response(error.status, error.code, error.message, error.details, error.headers)
        except RedisError:
            return redis_unavailable()


async def _admitted(ctx: ApiContext, scope: Scope, needed: str) -> tuple[ApiKey, str | None] | None:
    """The caller's key and ``Origin`` if the route's checks would admit it, else None."""
    authorization = origin = None
    for name, value in scope["headers"]:
        # A repeated header: the route's reading of it decides (Starlette's is the first, a loop's the last).
        if name == b"authorization":
            if authorization is not None:
                return None
            authorization = value.decode("latin-1")
        elif name == b"origin":
            if origin is not None:
                return None
            origin = value.decode("latin-1")
    if authorization is None:
        return None
    scheme, _sep, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or parse_token(token) is None:
        return None
    key = await ctx.key_cache.get(token, ctx.keys.authenticate)
    if key is None or key.revoked_at is not None or not key.allows_origin(origin) or not key.allows(needed):
        return None
    return key, origin


def _fields(query_string: bytes, *, allowed: bool) -> tuple[bool, set[str] | None]:
    """Whether this path may answer the query, and the ``fields`` it asks for (None: all). Not when the query
    holds anything else, ``fields`` on the scores route, an unknown field or a value the route refuses."""
    if not query_string:
        return True, None
    if not allowed:
        return False, None
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != "fields" or len(pairs[0][1]) > 1000:
        return False, None
    try:
        return True, fields_wanted(pairs[0][1])
    except ApiError:
        return False, None
